#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "lockstep/config.h"
#include "lockstep/knobs.h"

namespace lockstep {
namespace {

// Sets an environment variable for the lifetime of the guard.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (old_.empty()) {
      unsetenv(name_.c_str());
    } else {
      setenv(name_.c_str(), old_.c_str(), 1);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  std::string old_;
};

std::string load_error() {
  try {
    Config::load();
  } catch (const ConfigError& error) {
    return error.what();
  }
  return "";
}

TEST(Config, DefaultsParse) {
  const Config config = Config::load();
  EXPECT_EQ(config.get(knobs::log_level), "info");
  EXPECT_EQ(config.get(knobs::checkpoint_every), 0);
  EXPECT_TRUE(config.get(knobs::handle_signals));
  EXPECT_DOUBLE_EQ(config.get(knobs::collective_timeout), 600.0);
  EXPECT_EQ(config.source(knobs::checkpoint_every.spec), "default");
}

TEST(Config, EnvironmentOverridesDefault) {
  ScopedEnv every("LOCKSTEP_CHECKPOINT_EVERY", "25");
  ScopedEnv level("LOCKSTEP_LOG_LEVEL", "debug");
  ScopedEnv signals("LOCKSTEP_HANDLE_SIGNALS", "off");
  ScopedEnv timeout("LOCKSTEP_COLLECTIVE_TIMEOUT", "2.5");
  const Config config = Config::load();
  EXPECT_EQ(config.get(knobs::checkpoint_every), 25);
  EXPECT_EQ(config.get(knobs::log_level), "debug");
  EXPECT_FALSE(config.get(knobs::handle_signals));
  EXPECT_DOUBLE_EQ(config.get(knobs::collective_timeout), 2.5);
  EXPECT_EQ(config.source(knobs::checkpoint_every.spec), "environment");
}

TEST(Config, FlagOverridesEnvironment) {
  ScopedEnv every("LOCKSTEP_CHECKPOINT_EVERY", "25");
  const Config config = Config::load({{"checkpoint_every", "7"}});
  EXPECT_EQ(config.get(knobs::checkpoint_every), 7);
  EXPECT_EQ(config.source(knobs::checkpoint_every.spec), "flag");
}

TEST(Config, NotANumberNamesVariableValueAndRange) {
  ScopedEnv every("LOCKSTEP_CHECKPOINT_EVERY", "ten");
  const std::string message = load_error();
  EXPECT_NE(message.find("LOCKSTEP_CHECKPOINT_EVERY"), std::string::npos) << message;
  EXPECT_NE(message.find("'ten'"), std::string::npos) << message;
  EXPECT_NE(message.find("not an integer"), std::string::npos) << message;
  EXPECT_NE(message.find("an integer in [0,"), std::string::npos) << message;
}

TEST(Config, TrailingGarbageIsRejected) {
  ScopedEnv every("LOCKSTEP_CHECKPOINT_EVERY", "10steps");
  EXPECT_NE(load_error().find("not an integer"), std::string::npos);
}

TEST(Config, OutOfRangeIsRejected) {
  {
    ScopedEnv every("LOCKSTEP_CHECKPOINT_EVERY", "-1");
    EXPECT_NE(load_error().find("out of range"), std::string::npos);
  }
  {
    ScopedEnv every("LOCKSTEP_CHECKPOINT_EVERY", "99999999999999999999999");
    EXPECT_NE(load_error().find("out of range"), std::string::npos);
  }
  {
    ScopedEnv timeout("LOCKSTEP_COLLECTIVE_TIMEOUT", "0");
    const std::string message = load_error();
    EXPECT_NE(message.find("LOCKSTEP_COLLECTIVE_TIMEOUT='0' is out of range"), std::string::npos)
        << message;
  }
}

TEST(Config, FloatRejectsNanAndText) {
  {
    ScopedEnv timeout("LOCKSTEP_COLLECTIVE_TIMEOUT", "nan");
    EXPECT_NE(load_error().find("not a number"), std::string::npos);
  }
  {
    ScopedEnv timeout("LOCKSTEP_COLLECTIVE_TIMEOUT", "5 minutes");
    EXPECT_NE(load_error().find("not a number"), std::string::npos);
  }
}

TEST(Config, UnknownEnumListsChoices) {
  ScopedEnv level("LOCKSTEP_LOG_LEVEL", "loud");
  const std::string message = load_error();
  EXPECT_NE(message.find("LOCKSTEP_LOG_LEVEL='loud'"), std::string::npos) << message;
  EXPECT_NE(message.find("one of trace, debug, info, warn, error, off"), std::string::npos)
      << message;
}

TEST(Config, BadBooleanIsRejected) {
  ScopedEnv signals("LOCKSTEP_HANDLE_SIGNALS", "maybe");
  EXPECT_NE(load_error().find("not a boolean"), std::string::npos);
}

TEST(Config, EmptyPathIsRejected) {
  ScopedEnv dir("LOCKSTEP_RUN_DIR", "");
  EXPECT_NE(load_error().find("LOCKSTEP_RUN_DIR='' is empty"), std::string::npos);
}

TEST(Config, MisspeltVariableGetsSuggestion) {
  ScopedEnv typo("LOCKSTEP_LOG_LEVL", "debug");
  const Config config = Config::load();
  ASSERT_EQ(config.unknown_variables().size(), 1u);
  EXPECT_EQ(config.unknown_variables()[0], "LOCKSTEP_LOG_LEVL (did you mean LOCKSTEP_LOG_LEVEL?)");
}

TEST(Config, TakeFlagsRemovesOnlyLockstepFlags) {
  std::vector<std::string> storage = {"trainer",
                                      "--lr",
                                      "0.1",
                                      "--lockstep-log-level=warn",
                                      "--lockstep-checkpoint-every",
                                      "5",
                                      "--",
                                      "--lockstep-device=cpu"};
  std::vector<char*> argv;
  for (auto& argument : storage) argv.push_back(argument.data());
  argv.push_back(nullptr);
  int argc = static_cast<int>(storage.size());
  const auto flags = Config::take_flags(argc, argv.data());
  EXPECT_EQ(flags.size(), 2u);
  EXPECT_EQ(flags.at("log_level"), "warn");
  EXPECT_EQ(flags.at("checkpoint_every"), "5");
  ASSERT_EQ(argc, 5);
  EXPECT_STREQ(argv[1], "--lr");
  EXPECT_STREQ(argv[2], "0.1");
  EXPECT_STREQ(argv[3], "--");
  EXPECT_STREQ(argv[4], "--lockstep-device=cpu");  // after "--": the program's own
  EXPECT_EQ(argv[5], nullptr);
}

TEST(Config, UnknownFlagAndMissingValueAreErrors) {
  {
    std::string a0 = "trainer", a1 = "--lockstep-colour=blue";
    char* argv[] = {a0.data(), a1.data(), nullptr};
    int argc = 2;
    EXPECT_THROW(Config::take_flags(argc, argv), ConfigError);
  }
  {
    std::string a0 = "trainer", a1 = "--lockstep-log-level";
    char* argv[] = {a0.data(), a1.data(), nullptr};
    int argc = 2;
    try {
      Config::take_flags(argc, argv);
      FAIL() << "a flag without value was accepted";
    } catch (const ConfigError& error) {
      EXPECT_NE(std::string(error.what()).find("needs a value"), std::string::npos);
    }
  }
  EXPECT_THROW(Config::load({{"no_such_knob", "1"}}), ConfigError);
}

TEST(Config, EveryKnobIsDocumentedAndValid) {
  for (const KnobSpec* spec : all_knobs()) {
    EXPECT_TRUE(spec->env.starts_with("LOCKSTEP_")) << spec->name;
    EXPECT_FALSE(spec->doc.empty()) << spec->name;
    EXPECT_EQ(find_knob(spec->name), spec);
    const std::string help = config_help_text();
    EXPECT_NE(help.find(spec->env), std::string::npos) << spec->env;
    EXPECT_NE(help.find(spec->flag()), std::string::npos) << spec->flag();
  }
  // Defaults themselves must pass validation.
  EXPECT_NO_THROW(Config::load());
}

TEST(Config, DocsPageIsGeneratedFromTable) {
  std::ifstream page(std::string(LOCKSTEP_SOURCE_DIR) + "/docs/CONFIG.md");
  ASSERT_TRUE(page.good()) << "docs/CONFIG.md is missing; run `lockstep config --markdown`";
  std::stringstream text;
  text << page.rdbuf();
  EXPECT_EQ(text.str(), config_markdown())
      << "docs/CONFIG.md is stale; regenerate it with `lockstep config --markdown`";
}

}  // namespace
}  // namespace lockstep
