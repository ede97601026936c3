// LOCKSTEP_CHECK_HDF5 (checkpoint/src/hdf5_check.h).
#include <string>

#include <gtest/gtest.h>

#include "hdf5_check.h"

namespace lockstep {
namespace {

TEST(Hdf5Check, CarriesCallFileAndErrorStack) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // no automatic stack printing
  try {
    LOCKSTEP_CHECK_HDF5(H5Fopen("/nonexistent/dir/file.h5", H5F_ACC_RDONLY, H5P_DEFAULT));
    ADD_FAILURE() << "no BackendError thrown";
  } catch (const BackendError& error) {
    EXPECT_EQ(error.library(), "HDF5");
    EXPECT_NE(error.code(), 0);
    const std::string message = error.what();
    for (const std::string part :
         {"H5Fopen(\"/nonexistent/dir/file.h5\", H5F_ACC_RDONLY, H5P_DEFAULT)",
          "unable to open file", "hdf5_check_test.cc:"}) {
      EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
    }
  }
}

TEST(Hdf5Check, ReturnsTheValue) {
  const hid_t space = LOCKSTEP_CHECK_HDF5(H5Screate(H5S_SCALAR));
  EXPECT_GE(space, 0);
  EXPECT_GE(LOCKSTEP_CHECK_HDF5(H5Sclose(space)), 0);
}

}  // namespace
}  // namespace lockstep
