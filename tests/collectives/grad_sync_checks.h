// Checks that the GradSync tests of host and GPU gradients share.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include <lockstep/communicator.h>
#include <lockstep/error.h>
#include <lockstep/grad_sync.h>

#include "mpi_test.h"

namespace lockstep::testing {

// One communicator of the job's ranks for host gradients (the mpi backend,
// also on ranks bound to a GPU), shared by the tests of one binary.
inline Communicator& host_communicator() {
  static std::unique_ptr<Communicator> comm =
      make_communicator(runtime().comm(), Device::cpu(), communicator_options(runtime()));
  return *comm;
}

// `gradients` are the ones `sync` registered, "embed.weight" first and
// "fc1.weight" second. Marking the second ready twice, and waiting with the
// first never marked, are usage errors naming the gradient; the step then
// completes, so that every rank's buckets all run.
inline void expect_ready_twice_and_never_ready_errors(GradSync& sync,
                                                      std::vector<Tensor>& gradients) {
  sync.ready(gradients[1]);
  try {
    sync.ready(gradients[1]);
    ADD_FAILURE() << "marking a gradient ready twice did not throw";
  } catch (const UsageError& error) {
    EXPECT_NE(std::string(error.what()).find("'fc1.weight' was marked ready twice"),
              std::string::npos)
        << error.what();
  }
  for (std::size_t i = 2; i < gradients.size(); ++i) sync.ready(gradients[i]);
  try {
    sync.wait();
    ADD_FAILURE() << "wait() with a gradient never marked did not throw";
  } catch (const UsageError& error) {
    EXPECT_NE(std::string(error.what()).find("'embed.weight' was never marked ready"),
              std::string::npos)
        << error.what();
  }
  sync.ready(gradients[0]);
  sync.wait();
}

}  // namespace lockstep::testing
