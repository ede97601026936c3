// why_not_private(): the check of a directory this user writes into, made
// on real directories (owned by another user through chown, which needs
// root; the tests that need it say so and are skipped otherwise).
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "lockstep/files.h"

namespace lockstep {
namespace {

namespace fs = std::filesystem;

constexpr uid_t kNobody = 65534;

class PrivateDirectory : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = fs::temp_directory_path() / ("lockstep-files-test-" + std::to_string(::getpid()));
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

  fs::path base_;
};

void expect_contains(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "'" << part << "' not in: " << text;
}

TEST_F(PrivateDirectory, OwnDirectoriesPass) {
  EXPECT_EQ(files::why_not_private(make("mine", 0700)), "");
  // The group is trusted: a project's shared directory is group-writable.
  EXPECT_EQ(files::why_not_private(make("group", 02770)), "");
  // A directory of one's own in a sticky one that everyone writes to (/tmp).
  make("sticky", 01777);
  EXPECT_EQ(files::why_not_private(make("sticky/run", 0755)), "");
  // Nothing to say of what is not there (the caller makes it, or fails).
  EXPECT_EQ(files::why_not_private(base_ / "missing"), "");
}

TEST_F(PrivateDirectory, WorldWritableIsNamed) {
  const std::string why = files::why_not_private(make("open", 0777));
  expect_contains(why, (base_ / "open").string());
  expect_contains(why, "every user (mode 0777)");
  // Sticky does not help: others may still create names in it.
  expect_contains(files::why_not_private(make("open-sticky", 01777)), "mode 1777");
}

TEST_F(PrivateDirectory, ParentWritableByAllWithoutStickyIsNamed) {
  make("open", 0777);
  const std::string why = files::why_not_private(make("open/run", 0700));
  expect_contains(why, "lies in " + (base_ / "open").string());
  expect_contains(why, "without the sticky bit");
}

TEST_F(PrivateDirectory, ALinkIsJudgedByWhatItLeadsTo) {
  const fs::path open = make("open", 0777);
  fs::create_directory_symlink(open, base_ / "link");
  const std::string why = files::why_not_private(base_ / "link");
  expect_contains(why, (base_ / "link").string() + " (that is, " + open.string() + ")");
  fs::create_directory_symlink(make("mine", 0700), base_ / "good-link");
  EXPECT_EQ(files::why_not_private(base_ / "good-link"), "");
}

TEST_F(PrivateDirectory, AnotherUsersDirectoryOrLinkIsNamed) {
  if (::geteuid() != 0) GTEST_SKIP() << "giving a directory to another user needs root";
  const fs::path theirs = make("theirs", 0755);
  ASSERT_EQ(::chown(theirs.c_str(), kNobody, kNobody), 0);
  const std::string why = files::why_not_private(theirs);
  expect_contains(why, "(uid 65534), not by this user");
  fs::create_directory_symlink(make("mine", 0700), base_ / "their-link");
  ASSERT_EQ(::lchown((base_ / "their-link").c_str(), kNobody, kNobody), 0);
  expect_contains(files::why_not_private(base_ / "their-link"), "(uid 65534) owns");
}

}  // namespace
}  // namespace lockstep
