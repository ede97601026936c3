#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include <gtest/gtest.h>

#include "attempt.h"
#include "host_list.h"
#include "host_pool.h"
#include "laggard.h"
#include "lockstep/error.h"
#include "mpirun_command.h"
#include "output.h"
#include "slurm_job.h"
#include "status_line.h"
#include "supervisor.h"

namespace lockstep::launcher {
namespace {

std::string usage_error(const auto& body) {
  try {
    body();
  } catch (const UsageError& error) {
    return error.what();
  }
  return "";
}

TEST(HostList, ParsesSlotsAndDefaults) {
  EXPECT_EQ(parse_host_list("a:4,b:2"), (std::vector<Host>{{"a", 4}, {"b", 2}}));
  EXPECT_EQ(parse_host_list("node-1.example"), (std::vector<Host>{{"node-1.example", 1}}));
  EXPECT_EQ(total_slots(parse_host_list("a:4, b:3")), 7);
  EXPECT_EQ(host_list_string({{"a", 4}, {"b", 1}}), "a:4,b:1");
}

TEST(HostList, RejectsMalformedEntries) {
  for (const char* bad : {"", "a,,b", "a:0", "a:-1", "a:x", "a:4:5", "bad host", ":4"}) {
    const std::string message = usage_error([&] { parse_host_list(bad); });
    EXPECT_NE(message.find("bad host list"), std::string::npos) << "'" << bad << "': " << message;
  }
}

// Slots count ranks, which are ints: a total beyond one would wrap around
// into a small or negative rank count.
TEST(HostList, RejectsSlotsThatAddUpBeyondAnInt) {
  EXPECT_EQ(total_slots(parse_host_list("a:2147483646,b:1")), 2147483647);
  const std::string message = usage_error([] { parse_host_list("a:2147483647,b:1"); });
  EXPECT_NE(message.find("add up to more than"), std::string::npos) << message;
  EXPECT_EQ(total_slots(parse_hostfile_text("a slots=2147483646\nb\n", "h")), 2147483647);
  const std::string file_message =
      usage_error([] { parse_hostfile_text("a slots=2000000000\n# two\nb:2000000000\n", "h"); });
  EXPECT_NE(file_message.find("h:3: the slots add up"), std::string::npos) << file_message;
}

TEST(Hostfile, ParsesFormsAndComments) {
  const auto path = std::filesystem::temp_directory_path() / "lockstep-hostfile-test";
  std::ofstream(path) << "# cluster\nn1 slots=4\n\n  n2:2   # fast\nn3\n";
  EXPECT_EQ(parse_hostfile(path), (std::vector<Host>{{"n1", 4}, {"n2", 2}, {"n3", 1}}));
  std::filesystem::remove(path);
}

TEST(Hostfile, ErrorsCarryTheLineNumber) {
  const auto path = std::filesystem::temp_directory_path() / "lockstep-hostfile-bad";
  std::ofstream(path) << "n1 slots=4\n# ok\nn2 slots=0\n";
  const std::string message = usage_error([&] { parse_hostfile(path); });
  EXPECT_NE(message.find(path.string() + ":3:"), std::string::npos) << message;
  std::ofstream(path) << "# nothing\n";
  EXPECT_NE(usage_error([&] { parse_hostfile(path); }).find("names no host"), std::string::npos);
  std::filesystem::remove(path);
  EXPECT_NE(usage_error([&] { parse_hostfile(path); }).find("cannot read"), std::string::npos);
}

// The status line names steps as the program does (the checkpoint's step
// is its directory's, step-<N>), with the count done beside the total.
TEST(StatusLine, NamesStepsAsTheProgramDoes) {
  StatusLine status(1000, 10);
  EXPECT_EQ(status.text().rfind("starting | no ckpt", 0), 0U) << status.text();
  const auto start = std::chrono::steady_clock::now();
  status.on_step(118, {{"loss", 0.5}}, start);
  status.on_step(119, {{"loss", 0.25}}, start + std::chrono::seconds(1));
  status.on_checkpoint(99);
  const std::string line = status.text();
  EXPECT_EQ(line.rfind("step 119 (120 of 1000 done) | 1.00 steps/s | loss 0.25 | ckpt step 99 | "
                       "restarts 0 | ETA 14m40s",
                       0),
            0U)
      << line;
}

// mpirun kills the other ranks of a job with a dead rank at once, unless the
// user chose a wait of their own.
TEST(MpirunCommand, StopsTheRanksOfABrokenJobAtOnce) {
  LaunchPlan plan;
  plan.ranks = 2;
  plan.program = {"./train"};
  ::unsetenv("OMPI_MCA_odls_base_sigkill_timeout");
  EXPECT_NE(shell_quote(mpirun_argv(plan)).find(" --mca odls_base_sigkill_timeout 0 "),
            std::string::npos);
  ::setenv("OMPI_MCA_odls_base_sigkill_timeout", "3", 1);
  EXPECT_EQ(shell_quote(mpirun_argv(plan)).find("sigkill"), std::string::npos);
  ::unsetenv("OMPI_MCA_odls_base_sigkill_timeout");
}

TEST(MpirunCommand, OversubscribesOnlyBeyondTheSlots) {
  LaunchPlan plan;
  plan.ranks = 4;
  plan.local_cores = 2;
  plan.program = {"./train", "--lr", "0.1"};
  plan.environment = {{"LOCKSTEP_MONITOR_TOKEN", "secret"}};
  const auto argv = mpirun_argv(plan);
  const std::string line = shell_quote(argv);
  EXPECT_EQ(line.find("mpirun -n 4 --oversubscribe --bind-to none"), 0u) << line;
  EXPECT_NE(line.find("--tag-output"), std::string::npos);
  EXPECT_NE(line.find("-x LOCKSTEP_MONITOR_TOKEN ./train --lr 0.1"), std::string::npos) << line;
  EXPECT_EQ(line.find("secret"), std::string::npos) << "secrets stay off the command line";
  plan.ranks = 2;
  plan.as_root = true;
  const std::string fitting = shell_quote(mpirun_argv(plan));
  EXPECT_EQ(fitting.find("--oversubscribe"), std::string::npos) << fitting;
  EXPECT_NE(fitting.find("--allow-run-as-root"), std::string::npos);
  plan.hosts = {{"a", 1}, {"b", 1}};
  plan.ranks = 4;
  const std::string hosts = shell_quote(mpirun_argv(plan));
  EXPECT_NE(hosts.find("--host a:1,b:1 --oversubscribe"), std::string::npos) << hosts;
}

TEST(MpirunCommand, BindsEachRankToItsShareOfTheMachine) {
  LaunchPlan plan;
  plan.local_cores = 16;
  plan.program = {"./train"};
  plan.ranks = 4;
  EXPECT_NE(shell_quote(mpirun_argv(plan))
                .find("--use-hwthread-cpus --map-by slot:PE=4 --bind-to hwthread"),
            std::string::npos);
  plan.ranks = 3;  // the remainder stays free
  EXPECT_NE(shell_quote(mpirun_argv(plan)).find("--map-by slot:PE=5 "), std::string::npos);
  plan.ranks = 16;
  EXPECT_NE(shell_quote(mpirun_argv(plan)).find("--map-by slot:PE=1 "), std::string::npos);
  // Other hosts' cores are unknown: no binding there.
  plan.hosts = {{"a", 8}, {"b", 8}};
  const std::string hosts = shell_quote(mpirun_argv(plan));
  EXPECT_NE(hosts.find("--bind-to none"), std::string::npos) << hosts;
  EXPECT_EQ(hosts.find("PE="), std::string::npos) << hosts;
}

TEST(MpirunCommand, QuotesForTheShell) {
  EXPECT_EQ(shell_quote({"a", "b c", "it's", ""}), "a 'b c' 'it'\\''s' ''");
}

TEST(Output, ParsesOpenMpiTags) {
  const OutputLine line = parse_tagged_line("[1,3]<stderr>:loss nan", false);
  EXPECT_EQ(line.rank, 3);
  EXPECT_TRUE(line.is_stderr);
  EXPECT_EQ(line.text, "loss nan");
  const OutputLine plain = parse_tagged_line("mpirun noticed something", true);
  EXPECT_EQ(plain.rank, -1);
  EXPECT_EQ(plain.text, "mpirun noticed something");
}

TEST(Output, FirstMpirunVerdictWins) {
  MpirunMessageParser parser;
  parser.feed(
      "mpirun noticed that process rank 2 with PID 1234 on node vm exited on signal 9 (Killed).");
  parser.feed(
      "mpirun noticed that process rank 0 with PID 1200 on node vm exited on signal 15 "
      "(Terminated).");
  EXPECT_EQ(parser.verdict().rank, 2);
  EXPECT_EQ(parser.verdict().signal, 9);

  MpirunMessageParser exit_parser;
  exit_parser.feed("  Process name: [[51863,1],1]");
  exit_parser.feed("  Exit code:    7");
  EXPECT_EQ(exit_parser.verdict().rank, 1);
  EXPECT_EQ(exit_parser.verdict().exit_code, 7);

  MpirunMessageParser abort_parser;
  abort_parser.feed("MPI_ABORT was invoked on rank 3 in communicator MPI_COMM_WORLD");
  abort_parser.feed("with errorcode 5.");
  EXPECT_EQ(abort_parser.verdict().rank, 3);
  EXPECT_TRUE(abort_parser.verdict().called_abort);
  EXPECT_EQ(abort_parser.verdict().exit_code, 5);
}

TEST(Output, SrunVerdictNamesTheNodeAndEveryTask) {
  MpirunMessageParser parser;
  parser.feed("srun: error: n2: tasks 2-3: Killed");
  parser.feed("srun: error: n1: tasks 0-1: Killed");
  EXPECT_EQ(parser.verdict().rank, 2);
  EXPECT_EQ(parser.verdict().node, "n2");
  EXPECT_EQ(parser.verdict().signal, 9);
  EXPECT_TRUE(parser.verdict().names(3));
  EXPECT_FALSE(parser.verdict().names(0));

  MpirunMessageParser list_parser;
  list_parser.feed("srun: error: node7: tasks 0,4-5: Exited with exit code 3");
  EXPECT_EQ(list_parser.verdict().ranks, (std::vector<int>{0, 4, 5}));
  EXPECT_EQ(list_parser.verdict().exit_code, 3);
  EXPECT_EQ(list_parser.verdict().node, "node7");

  MpirunMessageParser single;
  single.feed("srun: error: n1: task 1: Segmentation fault");
  EXPECT_EQ(single.verdict().rank, 1);
  EXPECT_EQ(single.verdict().signal, 11);
  EXPECT_TRUE(single.verdict().failed_node.empty());

  // A lost node: Slurm says so before the cascade of killed tasks.
  MpirunMessageParser lost;
  lost.feed("srun: error: Node failure on n2");
  lost.feed("srun: error: n1: task 0: Killed");
  lost.feed("srun: error: Node failure on n3");
  EXPECT_EQ(lost.verdict().failed_node, "n2");
  EXPECT_EQ(lost.verdict().rank, 0);
}

TEST(Slurm, SrunArgvLeavesOutExcludedNodes) {
  LaunchPlan plan;
  plan.starter = Starter::kSrun;
  plan.ranks = 0;
  plan.program = {"./trainer"};
  EXPECT_EQ(shell_quote(launch_argv(plan)),
            "srun --mpi=pmix --kill-on-bad-exit=1 --label --unbuffered ./trainer");
  HostPool pool({{"n1", 4}, {"n2", 4}, {"n3", 4}}, {.ranks = 12, .noun = "node"});
  EXPECT_EQ(pool.implicate("n2", false, "killed by signal 9", 1), std::nullopt)
      << "one failure is not a pattern";
  const auto change = pool.implicate("n2", false, "killed by signal 9", 2);
  ASSERT_TRUE(change.has_value());
  EXPECT_NE(change->find("node n2 is implicated in 2 failed attempts"), std::string::npos);
  const PoolLayout layout = pool.layout();
  plan.excluded_nodes = {pool.left_out().front().host};
  plan.nodes = static_cast<int>(layout.hosts.size());
  plan.ranks = layout.ranks;
  EXPECT_EQ(shell_quote(launch_argv(plan)),
            "srun --mpi=pmix --kill-on-bad-exit=1 --label --unbuffered -N 2 -n 8 --exclude=n2 "
            "./trainer");
}

TEST(HostPool, MinNodesKeepsTheLastNodes) {
  HostPool pool({{"n1", 2}, {"n2", 2}}, {.ranks = 4, .min_hosts = 2, .exclude_after = 1});
  const auto refusal = pool.implicate("n1", false, "exited with code 1", 1);
  ASSERT_TRUE(refusal.has_value());
  EXPECT_NE(refusal->find("fewer than --min-nodes 2; it stays"), std::string::npos);
  EXPECT_TRUE(pool.left_out().empty());
  EXPECT_EQ(pool.implicate("", false, "unknown", 1), std::nullopt)
      << "a failure with no host to blame counts for none";
  EXPECT_EQ(pool.implicate("elsewhere", true, "lost", 1), std::nullopt)
      << "a host the pool does not know cannot be left out";
  EXPECT_EQ(pool.shortfall(), "");
}

TEST(HostPool, SparesAreNotStartedAndReplaceALostHost) {
  HostPool pool({{"node1", 2}, {"node2", 2}, {"node3", 2}}, {.ranks = 4});
  PoolLayout layout = pool.layout();
  EXPECT_EQ(layout.ranks, 4);
  EXPECT_EQ(layout.hosts, (std::vector<Host>{{"node1", 2}, {"node2", 2}}));
  EXPECT_EQ(layout.spares, (std::vector<Host>{{"node3", 2}}));
  // A host named by its short name matches the list's full one, and a lost
  // host goes at once.
  const auto change = pool.implicate("node2.cluster", true, "no message for 5 s", 1);
  ASSERT_TRUE(change.has_value());
  EXPECT_NE(change->find("host node2 is lost:"), std::string::npos) << *change;
  EXPECT_NE(change->find("take the spare host node3 in its place"), std::string::npos) << *change;
  layout = pool.layout();
  EXPECT_EQ(layout.ranks, 4) << "the same world size";
  EXPECT_EQ(layout.hosts, (std::vector<Host>{{"node1", 2}, {"node3", 2}}));
  EXPECT_TRUE(layout.spares.empty());
  ASSERT_EQ(pool.left_out().size(), 1u);
  EXPECT_EQ(pool.left_out()[0].host, "node2");
  EXPECT_EQ(pool.left_out()[0].why, "no message for 5 s");
  EXPECT_EQ(pool.left_out()[0].attempt, 1);
  EXPECT_EQ(pool.remaining(), (std::vector<std::string>{"node1", "node3"}));
  EXPECT_EQ(pool.implicate("node2", true, "again", 2), std::nullopt) << "already left out";
}

TEST(HostPool, WithoutASpareTheWorldShrinksThenStopsBelowTheMinimum) {
  HostPool pool({{"node1", 2}, {"node2", 2}}, {.ranks = 4, .min_hosts = 1});
  const auto change = pool.implicate("node2", true, "cannot be entered", 1);
  ASSERT_TRUE(change.has_value());
  EXPECT_NE(change->find("run 2 ranks on 1 host(s) (node1); no spare host is left"),
            std::string::npos)
      << *change;
  EXPECT_EQ(pool.layout().ranks, 2);
  EXPECT_EQ(pool.shortfall(), "");
  const auto last = pool.implicate("node1", true, "cannot be entered", 2);
  ASSERT_TRUE(last.has_value());
  EXPECT_NE(pool.shortfall().find("0 host(s) remain (none), fewer than --min-nodes 1"),
            std::string::npos)
      << pool.shortfall();
  EXPECT_NE(last->find("it is left out, and 0 host(s) remain"), std::string::npos) << *last;
}

TEST(HostPool, OversubscribedListsKeepTheirRanksPerSlot) {
  // 8 ranks on 4 slots: two per slot, before and after a host is lost.
  HostPool pool({{"a", 2}, {"b", 2}}, {.ranks = 8});
  EXPECT_EQ(pool.layout().ranks, 8);
  ASSERT_TRUE(pool.implicate("b", true, "lost", 1).has_value());
  EXPECT_EQ(pool.layout().ranks, 4);
  EXPECT_EQ(pool.layout().hosts, (std::vector<Host>{{"a", 2}}));
}

TEST(HostPool, ALostSpareLeavesTheLayoutAlone) {
  HostPool pool({{"a", 1}, {"b", 1}, {"c", 1}}, {.ranks = 2});
  const auto change = pool.implicate("c", true, "cannot be entered", 1);
  ASSERT_TRUE(change.has_value());
  EXPECT_NE(change->find("the spare is left out; the next attempts still run 2 ranks"),
            std::string::npos)
      << *change;
  EXPECT_EQ(pool.layout().hosts, (std::vector<Host>{{"a", 1}, {"b", 1}}));
}

TEST(Laggard, NamesTheRankThatNeverEnteredWhatOthersWaitIn) {
  std::map<int, RankProgress> ranks;
  const auto report = [](std::int64_t started, std::int64_t finished, std::string waiting) {
    return std::vector<CollectiveReport>{{"mpi 1", started, finished, std::move(waiting)}};
  };
  ranks[0] = {"node1", report(812, 811, "allreduce (4096 bytes, f32, sum) #812")};
  ranks[1] = {"node1", report(812, 811, "allreduce (4096 bytes, f32, sum) #812")};
  ranks[2] = {"node2", report(812, 811, "allreduce (4096 bytes, f32, sum) #812")};
  ranks[3] = {"node2", report(811, 811, "")};
  const std::optional<Laggard> found = find_laggard(ranks);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->rank, 3);
  EXPECT_EQ(found->host, "node2");
  EXPECT_EQ(found->what,
            "never entered allreduce (4096 bytes, f32, sum) #812 (its last was #811); ranks 0, "
            "1, 2 wait in it");
  // Everyone inside the collective: the hang is in the backend, no laggard.
  ranks[3] = {"node2", report(812, 811, "allreduce (4096 bytes, f32, sum) #812")};
  EXPECT_FALSE(find_laggard(ranks).has_value());
  // Nobody waits: nothing to say.
  for (auto& [rank, progress] : ranks) progress.collectives = report(812, 812, "");
  EXPECT_FALSE(find_laggard(ranks).has_value());
}

TEST(Output, TailsKeepTheLastLinesPerRank) {
  OutputTails tails(2);
  for (int i = 0; i < 5; ++i) tails.add({1, false, std::to_string(i)});
  tails.add({2, false, "x"});
  EXPECT_EQ(tails.of(1), (std::deque<std::string>{"3", "4"}));
  EXPECT_EQ(tails.of(2).size(), 1u);
  EXPECT_TRUE(tails.of(7).empty());
}

TEST(InjectedFailure, Parses) {
  const InjectedFailure kill = parse_injected_failure("2:50");
  EXPECT_EQ(kill.rank, 2);
  EXPECT_EQ(kill.step, 50);
  EXPECT_EQ(kill.signal, SIGKILL);
  EXPECT_FALSE(kill.at_checkpoint);
  EXPECT_EQ(parse_injected_failure("1:3:STOP").signal, SIGSTOP);
  const InjectedFailure during_save = parse_injected_failure("3:100c:KILL");
  EXPECT_TRUE(during_save.at_checkpoint);
  EXPECT_EQ(during_save.step, 100);
  EXPECT_EQ(parse_injected_failure("0:0:15").signal, 15);
  for (const char* bad :
       {"2", "a:1", "1:b", "1:2:NOPE", "-1:2", "1:2:0", "1:2:99", "1x:2", "1:c"}) {
    EXPECT_THROW(parse_injected_failure(bad), UsageError) << bad;
  }
}

TEST(Goodput, SplitsWallTime) {
  const Clock::time_point t0 = Clock::now();
  const auto at = [&](double s) {
    return t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  };
  // Attempt 0: starts at 0, steps 0..19 from 1 s to 20 s (1 s each),
  // checkpoint after step 9, dies at 20.5 s. Attempt 1: starts at 21 s,
  // resumes at step 10 at 25 s, runs to step 29 at 44 s, finishes at 45 s.
  AttemptRecord first;
  first.start = at(0);
  first.first_step_at = at(1);
  first.first_step = 0;
  first.last_step_at = at(20);
  first.last_step = 19;
  first.step_seconds = 1;
  first.failure_at = at(20.5);
  first.end = at(21);
  AttemptRecord second;
  second.index = 1;
  second.start = at(21);
  second.first_step_at = at(25);
  second.first_step = 10;
  second.last_step_at = at(44);
  second.last_step = 29;
  second.step_seconds = 1;
  second.end = at(45);
  const std::vector<CheckpointEvent> checkpoints = {{at(10.2), 9, 0.2}};
  const Goodput goodput = compute_goodput({first, second}, checkpoints, t0, at(45));
  EXPECT_NEAR(goodput.wall_seconds, 45, 1e-6);
  EXPECT_NEAR(goodput.lost_seconds, 10, 1e-6);      // steps 10..19 ran twice
  EXPECT_NEAR(goodput.restart_seconds, 3.5, 1e-6);  // 20.5 s -> 24 s (step 10 began)
  EXPECT_NEAR(goodput.checkpoint_seconds, 0.2, 1e-6);
  EXPECT_NEAR(goodput.productive_seconds, 20 + 20 - 10 - 0.2, 1e-6);
  EXPECT_NEAR(goodput.mean_time_to_recovery, 4.5, 1e-6);  // 20.5 s -> 25 s
  EXPECT_EQ(goodput.steps_completed, 30);
  EXPECT_EQ(goodput.restarts, 1);
  EXPECT_NEAR(goodput.productive_seconds + goodput.lost_seconds + goodput.restart_seconds +
                  goodput.checkpoint_seconds + goodput.other_seconds,
              goodput.wall_seconds, 1e-6);
}

}  // namespace
}  // namespace lockstep::launcher
