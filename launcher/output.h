// Output of a job: splits mpirun's --tag-output stream into lines per rank,
// prints each with the rank's prefix, keeps the last lines of every rank for
// the root-cause report, and reads mpirun's own failure messages.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lockstep::launcher {

// One line of job output. rank is -1 for mpirun's own lines.
struct OutputLine {
  int rank = -1;
  bool is_stderr = false;
  std::string text;
};

// Parses "[1,3]<stdout>:text" (mpirun's --tag-output) or "3: text" (srun's
// --label). Untagged lines come from mpirun or srun itself.
OutputLine parse_tagged_line(std::string_view line, bool from_stderr, bool srun_labels = false);

// What mpirun said about the process that ended the job.
struct MpirunVerdict {
  int rank = -1;
  std::vector<int> ranks;  // every rank the message names (srun: "tasks 0-1,3")
  std::string node;        // where they ran, when the message says
  int signal = 0;
  std::optional<int> exit_code;
  bool called_abort = false;
  // srun: "srun: error: Node failure on n2": Slurm lost the node.
  std::string failed_node;

  bool names(int r) const {
    return r >= 0 && (r == rank || std::find(ranks.begin(), ranks.end(), r) != ranks.end());
  }
};

// Reads mpirun's messages ("process rank 2 with PID ... exited on signal 9",
// "Process name: [[x,1],2] / Exit code: 1", "MPI_ABORT was invoked on rank 1
// ... errorcode 3") and srun's ("srun: error: n1: task 2: Killed",
// "... task 1: Exited with exit code 3", "srun: error: Node failure on n2")
// line by line.
class MpirunMessageParser {
 public:
  void feed(std::string_view line);
  const MpirunVerdict& verdict() const { return verdict_; }

 private:
  MpirunVerdict verdict_;
  bool expect_exit_code_ = false;
  bool expect_error_code_ = false;
};

// Splits byte chunks into lines; one per stream.
class LineSplitter {
 public:
  // Appends bytes; calls `on_line` for every completed line.
  template <class OnLine>
  void feed(std::string_view bytes, OnLine&& on_line) {
    buffer_.append(bytes);
    std::size_t newline;
    while ((newline = buffer_.find('\n')) != std::string::npos) {
      on_line(std::string_view(buffer_).substr(0, newline));
      buffer_.erase(0, newline + 1);
    }
  }
  // The unterminated rest, once the stream has ended.
  std::string take_rest() {
    std::string rest;
    rest.swap(buffer_);
    return rest;
  }

 private:
  std::string buffer_;
};

// The last `capacity` lines of each rank (and of mpirun, rank -1).
class OutputTails {
 public:
  explicit OutputTails(std::size_t capacity) : capacity_(capacity) {}
  void add(const OutputLine& line);
  const std::deque<std::string>& of(int rank) const;
  void clear() { tails_.clear(); }

 private:
  std::size_t capacity_;
  std::map<int, std::deque<std::string>> tails_;
};

}  // namespace lockstep::launcher
