#include "output.h"

#include <map>
#include <regex>

namespace lockstep::launcher {

OutputLine parse_tagged_line(std::string_view line, bool from_stderr, bool srun_labels) {
  static const std::regex kTag(R"(^\[(\d+),(\d+)\]<(stdout|stderr)>:(.*)$)");
  static const std::regex kLabel(R"(^ *(\d+): (.*)$)");
  std::match_results<std::string_view::const_iterator> match;
  OutputLine parsed;
  parsed.is_stderr = from_stderr;
  if (srun_labels) {
    if (std::regex_match(line.begin(), line.end(), match, kLabel)) {
      parsed.rank = std::stoi(match[1].str());
      parsed.text = match[2].str();
    } else {
      parsed.text = std::string(line);
    }
  } else if (std::regex_match(line.begin(), line.end(), match, kTag)) {
    parsed.rank = std::stoi(match[2].str());
    parsed.is_stderr = match[3].str() == "stderr";
    parsed.text = match[4].str();
  } else {
    parsed.text = std::string(line);
  }
  return parsed;
}

namespace {

// "2", "0-1", "0,2-3" -> the ranks they name.
std::vector<int> parse_task_list(const std::string& text) {
  std::vector<int> ranks;
  std::size_t begin = 0;
  while (begin < text.size()) {
    std::size_t end = text.find(',', begin);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(begin, end - begin);
    const std::size_t dash = item.find('-');
    const int first = std::stoi(item.substr(0, dash));
    const int last = dash == std::string::npos ? first : std::stoi(item.substr(dash + 1));
    for (int rank = first; rank <= last; ++rank) ranks.push_back(rank);
    begin = end + 1;
  }
  return ranks;
}

}  // namespace

void MpirunMessageParser::feed(std::string_view line) {
  static const std::regex kSignal(
      R"(process rank (\d+) with PID \d+ on node (\S+) exited on signal (\d+))");
  static const std::regex kProcessName(R"(Process name:\s*\[\[\d+,\d+\],(\d+)\])");
  static const std::regex kExitCode(R"(Exit code:\s*(\d+))");
  static const std::regex kAbort(R"(MPI_ABORT was invoked on rank (\d+))");
  static const std::regex kErrorCode(R"(errorcode (\d+))");
  static const std::regex kSrunTask(
      R"(srun: error: (\S+): tasks? (\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*): (Killed|Terminated|Segmentation fault|Aborted|Exited with exit code (\d+)))");
  static const std::regex kNodeFailure(R"(srun: error: Node failure on (\S+))");
  const std::string text(line);
  std::smatch match;
  if (verdict_.failed_node.empty() && std::regex_search(text, match, kNodeFailure)) {
    verdict_.failed_node = match[1].str();
  }
  // The first report wins: later lines describe the cascade, not the cause.
  const bool decided = verdict_.rank >= 0 && (verdict_.signal != 0 || verdict_.exit_code);
  if (std::regex_search(text, match, kSrunTask)) {
    if (!decided) {
      static const std::map<std::string, int> kSignals = {
          {"Killed", 9}, {"Terminated", 15}, {"Segmentation fault", 11}, {"Aborted", 6}};
      verdict_.node = match[1].str();
      verdict_.ranks = parse_task_list(match[2].str());
      verdict_.rank = verdict_.ranks.front();
      if (match[4].matched) {
        verdict_.exit_code = std::stoi(match[4].str());
      } else {
        verdict_.signal = kSignals.at(match[3].str());
      }
    }
  } else if (std::regex_search(text, match, kSignal)) {
    if (!decided) {
      verdict_.rank = std::stoi(match[1].str());
      verdict_.node = match[2].str();
      verdict_.signal = std::stoi(match[3].str());
    }
  } else if (std::regex_search(text, match, kAbort)) {
    if (!decided) {
      verdict_.rank = std::stoi(match[1].str());
      verdict_.called_abort = true;
      expect_error_code_ = true;
    }
  } else if (std::regex_search(text, match, kProcessName)) {
    if (!decided) {
      verdict_.rank = std::stoi(match[1].str());
      expect_exit_code_ = true;
    }
  }
  if (expect_exit_code_ && std::regex_search(text, match, kExitCode)) {
    verdict_.exit_code = std::stoi(match[1].str());
    expect_exit_code_ = false;
  }
  if (expect_error_code_ && std::regex_search(text, match, kErrorCode)) {
    verdict_.exit_code = std::stoi(match[1].str());
    expect_error_code_ = false;
  }
}

void OutputTails::add(const OutputLine& line) {
  std::deque<std::string>& tail = tails_[line.rank];
  tail.push_back(line.text);
  if (tail.size() > capacity_) tail.pop_front();
}

const std::deque<std::string>& OutputTails::of(int rank) const {
  static const std::deque<std::string> kEmpty;
  const auto it = tails_.find(rank);
  return it == tails_.end() ? kEmpty : it->second;
}

}  // namespace lockstep::launcher
