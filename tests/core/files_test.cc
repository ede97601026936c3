// why_not_private() and create_directories(): the checks of a directory
// this user writes into, on real directories. Those owned by another user
// (through chown) need root and a user namespace that maps uid 65534; the
// tests that need them say so and are skipped otherwise.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "lockstep/files.h"

namespace lockstep {
namespace {

namespace fs = std::filesystem;

constexpr uid_t kNobody = 65534;
constexpr gid_t kNoGroup = 65534;

class PrivateDirectory : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = fs::canonical(fs::temp_directory_path()) /
            ("lockstep-files-test-" + std::to_string(::getpid()));
    fs::remove_all(base_);
    fs::create_directories(base_);
    ::chmod(base_.c_str(), 0755);
  }
  void TearDown() override { fs::remove_all(base_); }

  fs::path make(const std::string& name, mode_t mode) {
    const fs::path dir = base_ / name;
    fs::create_directories(dir);
    EXPECT_EQ(::chmod(dir.c_str(), mode), 0);
    return dir;
  }

  // Gives `path` (not followed) to uid/gid 65534; false when this process
  // cannot.
  static bool give_away(const fs::path& path, bool user, bool group) {
    return ::lchown(path.c_str(), user ? kNobody : static_cast<uid_t>(-1),
                    group ? kNoGroup : static_cast<gid_t>(-1)) == 0;
  }

  fs::path base_;
};

void expect_contains(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "'" << part << "' not in: " << text;
}

TEST_F(PrivateDirectory, OwnDirectoriesPass) {
  EXPECT_EQ(files::why_not_private(make("mine", 0700)), "");
  // The own group is trusted: a project's shared directory is group-writable.
  EXPECT_EQ(files::why_not_private(make("group", 02770)), "");
  // A directory of one's own in a sticky one that everyone writes to (/tmp).
  make("sticky", 01777);
  EXPECT_EQ(files::why_not_private(make("sticky/run", 0755)), "");
  EXPECT_EQ(files::why_not_private(base_ / "sticky/run/"), "");
  // Nothing to say of what is not there (the caller makes it, or fails).
  EXPECT_EQ(files::why_not_private(base_ / "missing"), "");
  EXPECT_EQ(files::why_not_private("/"), "");
}

TEST_F(PrivateDirectory, WorldWritableIsNamed) {
  const std::string why = files::why_not_private(make("open", 0777));
  expect_contains(why, (base_ / "open").string());
  expect_contains(why, "every user (mode 0777)");
  // Sticky does not help: others may still create names in it.
  expect_contains(files::why_not_private(make("open-sticky", 01777)), "mode 1777");
}

TEST_F(PrivateDirectory, AnOpenDirectoryAnywhereOnTheWayIsNamed) {
  make("open", 0777);
  std::string why = files::why_not_private(make("open/run", 0700));
  expect_contains(why, "lies in " + (base_ / "open").string() + ", which every user");
  expect_contains(why, "without the sticky bit");
  // Not only the parent: anyone could rename open/me and make their own.
  why = files::why_not_private(make("open/me/run", 0700));
  expect_contains(why, "lies in " + (base_ / "open").string() + ", which every user");
}

TEST_F(PrivateDirectory, ALinkIsJudgedByWhatItLeadsToAndWhereItLies) {
  const fs::path open = make("open", 0777);
  fs::create_directory_symlink(open, base_ / "link");
  std::string why = files::why_not_private(base_ / "link");
  expect_contains(why, (base_ / "link").string() + " (that is, " + open.string() + ")");
  // The same with a trailing slash.
  expect_contains(files::why_not_private(base_ / "link/"), "(mode 0777)");
  fs::create_directory_symlink(make("mine", 0700), base_ / "good-link");
  EXPECT_EQ(files::why_not_private(base_ / "good-link"), "");
  // A link of one's own in an open directory, to a good one: the link
  // could be swapped.
  fs::create_directory_symlink(base_ / "mine", open / "link-in-open");
  why = files::why_not_private(open / "link-in-open");
  expect_contains(why, "lies in " + open.string());
  // A link on the way, into an open directory.
  fs::create_directories(open / "deeper");
  fs::create_directory_symlink(open, base_ / "via");
  expect_contains(files::why_not_private(base_ / "via" / "deeper"), "without the sticky bit");
}

TEST_F(PrivateDirectory, AnotherUsersDirectoryOrLinkIsNamed) {
  const fs::path theirs = make("theirs", 0755);
  if (::geteuid() != 0 || !give_away(theirs, true, true)) {
    GTEST_SKIP() << "cannot give a directory to uid 65534 (needs root and a mapped uid)";
  }
  const std::string why = files::why_not_private(theirs);
  expect_contains(why, "uid 65534");
  expect_contains(why, "not by this user");
  fs::create_directory_symlink(make("mine", 0700), base_ / "their-link");
  ASSERT_TRUE(give_away(base_ / "their-link", true, true));
  expect_contains(files::why_not_private(base_ / "their-link"), "symbolic link that");
  // ... also in the middle of the way.
  make("mine/run", 0700);
  expect_contains(files::why_not_private(base_ / "their-link" / "run"), "symbolic link that");
}

TEST_F(PrivateDirectory, AGroupThisUserIsNotInIsNotTrusted) {
  const fs::path shared = make("shared", 0770);
  std::vector<gid_t> groups(static_cast<std::size_t>(std::max(::getgroups(0, nullptr), 0)));
  groups.resize(static_cast<std::size_t>(
      std::max(::getgroups(static_cast<int>(groups.size()), groups.data()), 0)));
  const bool member =
      ::getegid() == kNoGroup || std::find(groups.begin(), groups.end(), kNoGroup) != groups.end();
  if (member || !give_away(shared, false, true)) {
    GTEST_SKIP() << "cannot give a directory to a group this user is not in";
  }
  ::chmod(shared.c_str(), 0770);  // chown may clear set-id bits, not these
  expect_contains(files::why_not_private(shared), "which this user is not in");
}

TEST_F(PrivateDirectory, DirectoriesMadeAreNeverOpenToEveryUser) {
  const mode_t old = ::umask(0);
  std::error_code error;
  const auto made = files::create_directories(base_ / "a" / "b" / "c", error);
  ::umask(old);
  ASSERT_FALSE(error) << error.message();
  EXPECT_EQ(made, (std::vector<fs::path>{base_ / "a" / "b" / "c", base_ / "a" / "b", base_ / "a"}));
  for (const auto& dir : made) {
    struct stat info = {};
    ASSERT_EQ(::stat(dir.c_str(), &info), 0);
    EXPECT_EQ(info.st_mode & S_IWOTH, 0U) << dir;
  }
  EXPECT_EQ(files::why_not_private(base_ / "a" / "b" / "c"), "");
  EXPECT_TRUE(files::create_directories(base_ / "a", error).empty()) << "nothing new to make";
}

}  // namespace
}  // namespace lockstep
