// The checks that the monitor and a node's relay both apply to a rank's
// lines.
#include "lockstep/channel_rules.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

namespace lockstep::channel {
namespace {

TEST(ChannelRules, OnlyTheWholeTokenMatches) {
  const std::string token = "5f0c2a91d4e3b7a8";
  EXPECT_TRUE(same_token(token, token));
  EXPECT_TRUE(same_token(std::string(token), token));
  EXPECT_FALSE(same_token("5f0c2a91d4e3b7a9", token));  // the last character
  EXPECT_FALSE(same_token("4f0c2a91d4e3b7a8", token));  // the first
  EXPECT_FALSE(same_token("5f0c2a91d4e3b7a", token));   // a prefix
  EXPECT_FALSE(same_token(token + "0", token));         // longer
  EXPECT_FALSE(same_token("", token));
  EXPECT_FALSE(same_token(std::string("5f0c2a91d4e3b7a8\0", 17), token));
}

TEST(ChannelRules, ComputeTimesOutOfBoundsAreNotBelieved) {
  EXPECT_TRUE(plausible_compute(0.0, 1));
  EXPECT_TRUE(plausible_compute(0.125, 40));
  EXPECT_TRUE(plausible_compute(86400.0, 1'000'000'000));
  EXPECT_FALSE(plausible_compute(-0.001, 1));
  EXPECT_FALSE(plausible_compute(86400.5, 1));
  EXPECT_FALSE(plausible_compute(std::nan(""), 1));
  EXPECT_FALSE(plausible_compute(std::numeric_limits<double>::infinity(), 1));
  EXPECT_FALSE(plausible_compute(0.1, 0));
  EXPECT_FALSE(plausible_compute(0.1, -5));
  EXPECT_FALSE(plausible_compute(0.1, 1'000'000'001));
}

}  // namespace
}  // namespace lockstep::channel
