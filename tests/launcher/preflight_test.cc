// Preflight against a stand-in rsh agent (a shell script): hosts are entered
// in parallel, each within the bound, and every failure keeps the agent's
// own words. Across real hosts: tests/hosts/launcher_test.sh.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "lockstep/error.h"
#include "preflight.h"
#include "process.h"
#include "slurm_job.h"

namespace lockstep::launcher {
namespace {

// An agent called as `agent HOST true`: "good" answers, "refusing" fails as
// ssh does, "silent" never answers.
std::filesystem::path write_agent() {
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("preflight-agent-" + std::to_string(getpid()));
  std::ofstream(path) << "#!/bin/sh\n"
                         "case $1 in\n"
                         "  good) exec \"$2\" ;;\n"
                         "  refusing) echo \"ssh: connect to host $1 port 22: Connection "
                         "refused\" >&2; exit 255 ;;\n"
                         "  *) exec sleep 30 ;;\n"
                         "esac\n";
  std::filesystem::permissions(path, std::filesystem::perms::owner_all);
  return path;
}

TEST(Preflight, NamesEveryHostThatCannotBeEnteredWithinTheBound) {
  const std::filesystem::path agent = write_agent();
  const auto start = std::chrono::steady_clock::now();
  const std::vector<HostProblem> problems =
      preflight_hosts({"good", "refusing", "silent", "silent2", "good"}, {agent.string()},
                      std::chrono::milliseconds(800));
  const auto took = std::chrono::steady_clock::now() - start;
  std::filesystem::remove(agent);
  ASSERT_EQ(problems.size(), 3U);
  EXPECT_EQ(problems[0].host, "refusing");
  EXPECT_NE(problems[0].problem.find("exit code 255: ssh: connect to host refusing port 22: "
                                     "Connection refused"),
            std::string::npos)
      << problems[0].problem;
  EXPECT_EQ(problems[1].host, "silent");
  EXPECT_NE(problems[1].problem.find("did not finish within 0.8 s"), std::string::npos)
      << problems[1].problem;
  EXPECT_EQ(problems[2].host, "silent2");
  // In parallel: two silent hosts cost one bound, not two.
  EXPECT_LT(took, std::chrono::milliseconds(1500));
}

TEST(Preflight, TheAgentIsOpenMpisWithSshToldNotToPrompt) {
  ::setenv("OMPI_MCA_plm_rsh_agent", "/opt/agent --flag : rsh", 1);
  EXPECT_EQ(rsh_agent(std::chrono::seconds(7)), (std::vector<std::string>{"/opt/agent", "--flag"}));
  ::unsetenv("OMPI_MCA_plm_rsh_agent");
  EXPECT_EQ(rsh_agent(std::chrono::seconds(7)),
            (std::vector<std::string>{"ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=7"}));
}

TEST(RunBounded, KillsWhatOutlivesItsBoundAndKeepsWhatItSaid) {
  const auto start = std::chrono::steady_clock::now();
  const CommandResult slow =
      run_bounded({"/bin/sh", "-c", "echo started; sleep 30"}, std::chrono::milliseconds(300));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_FALSE(slow.status.has_value());
  EXPECT_EQ(slow.out, "started\n");
  const CommandResult fine =
      run_bounded({"/bin/sh", "-c", "echo out; echo err >&2"}, std::chrono::seconds(5));
  ASSERT_TRUE(fine.status.has_value());
  EXPECT_TRUE(fine.problem.empty()) << fine.problem;
  EXPECT_EQ(fine.out, "out\n");
  EXPECT_EQ(fine.err, "err");
}

}  // namespace
}  // namespace lockstep::launcher

namespace lockstep::launcher {
namespace {

// Slurm's view of the nodes, from a stand-in scontrol that answers
// `scontrol -o show node n1,n2,n3` with lines in the form Slurm 22.05 prints.
TEST(Preflight, SlurmsDownAndUnresponsiveNodesAreUnusable) {
  const std::filesystem::path scontrol =
      std::filesystem::temp_directory_path() / ("preflight-scontrol-" + std::to_string(getpid()));
  std::ofstream(scontrol)
      << "#!/bin/sh\n"
         "[ \"$1 $2 $3\" = \"-o show node\" ] || { echo \"unexpected: $*\" >&2; exit 1; }\n"
         "echo 'NodeName=n1 Arch=x86_64 CoresPerSocket=1 NodeAddr=10.77.0.11 "
         "NodeHostName=node1 State=MIXED ThreadsPerCore=1'\n"
         "echo 'NodeName=n2 Arch=x86_64 NodeAddr=10.77.0.12 NodeHostName=node2 "
         "State=MIXED+NOT_RESPONDING ThreadsPerCore=1 Reason=(null)'\n"
         "echo 'NodeName=n3 Arch=x86_64 NodeAddr=10.77.0.13 State=IDLE+DRAIN Reason=maint'\n"
         "echo 'NodeName=n4 Arch=x86_64 NodeAddr=10.77.0.14 State=DOWN+NOT_RESPONDING "
         "Reason=Not responding'\n";
  std::filesystem::permissions(scontrol, std::filesystem::perms::owner_all);
  SlurmOptions slurm;
  slurm.scontrol = scontrol.string();
  const std::vector<UnusableNode> unusable = unusable_nodes(slurm, {"n4", "n1", "n2", "n3"});
  ASSERT_EQ(unusable.size(), 2u);
  EXPECT_EQ(unusable[0].name, "n4") << "in the order asked";
  EXPECT_EQ(unusable[0].state, "DOWN+NOT_RESPONDING");
  EXPECT_EQ(unusable[1].name, "n2");
  EXPECT_EQ(unusable[1].state, "MIXED+NOT_RESPONDING");
  // A node not asked about is not reported, and a draining node still runs.
  EXPECT_TRUE(unusable_nodes(slurm, {"n1", "n3"}).empty());
  slurm.scontrol = "/nonexistent/scontrol";
  EXPECT_THROW(unusable_nodes(slurm, {"n1"}), IoError);
  std::filesystem::remove(scontrol);
}

}  // namespace
}  // namespace lockstep::launcher
