# Finds the libraries lockstep builds on. `make deps` (tools/install-deps.sh)
# installs every one of them from Debian's archive.
# The C++ component without the deprecated C++ bindings: the plain C
# library, usable from projects that enable only CXX.
set(MPI_CXX_SKIP_MPICXX ON)
find_package(MPI REQUIRED COMPONENTS CXX)
find_package(Threads REQUIRED)
find_package(spdlog REQUIRED)
find_package(fmt REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(CLI11 REQUIRED)
# libmicrohttpd serves `lockstep run --metrics-port` (Debian: libmicrohttpd-dev).
find_package(PkgConfig REQUIRED)
pkg_check_modules(MICROHTTPD REQUIRED IMPORTED_TARGET libmicrohttpd)

# Parallel HDF5 (Debian: libhdf5-openmpi-dev). The serial flavour cannot
# write one shared file from many ranks, so it is refused.
set(HDF5_PREFER_PARALLEL TRUE)
find_package(HDF5 REQUIRED COMPONENTS C)
if(NOT HDF5_IS_PARALLEL)
  message(FATAL_ERROR "lockstep needs parallel HDF5 built with MPI; install libhdf5-openmpi-dev "
                      "(found ${HDF5_C_INCLUDE_DIRS}, which is serial)")
endif()
if(NOT TARGET lockstep_hdf5)
  add_library(lockstep_hdf5 INTERFACE)
  target_include_directories(lockstep_hdf5 SYSTEM INTERFACE ${HDF5_C_INCLUDE_DIRS})
  target_link_libraries(lockstep_hdf5 INTERFACE ${HDF5_C_LIBRARIES})
  target_compile_definitions(lockstep_hdf5 INTERFACE ${HDF5_C_DEFINITIONS})
  lockstep_export_helper(lockstep_hdf5)
endif()

# CUDA and NCCL: AUTO builds them when a toolkit is found, ON insists.
set(LOCKSTEP_HAVE_CUDA OFF)
set(LOCKSTEP_HAVE_NCCL OFF)
if(NOT LOCKSTEP_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      # Hopper (H100/H200) first; Ampere for the A100s still in many clusters.
      set(CMAKE_CUDA_ARCHITECTURES 80 90)
    endif()
    # CMake 3.25 does not know nvcc's C++20 flag; device code needs no more than 17.
    set(CMAKE_CUDA_STANDARD 17)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(LOCKSTEP_HAVE_CUDA ON)
    find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
    find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR})
    if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
      set(LOCKSTEP_HAVE_NCCL ON)
      if(NOT TARGET lockstep_nccl)
        add_library(lockstep_nccl INTERFACE)
        target_include_directories(lockstep_nccl SYSTEM INTERFACE ${NCCL_INCLUDE_DIR})
        target_link_libraries(lockstep_nccl INTERFACE ${NCCL_LIBRARY} CUDA::cudart)
        lockstep_export_helper(lockstep_nccl)
      endif()
    elseif(LOCKSTEP_CUDA STREQUAL "ON")
      message(FATAL_ERROR "LOCKSTEP_CUDA=ON but NCCL (nccl.h, libnccl) was not found next to CUDA")
    endif()
  elseif(LOCKSTEP_CUDA STREQUAL "ON")
    message(FATAL_ERROR "LOCKSTEP_CUDA=ON but no CUDA compiler was found; install the CUDA "
                        "toolkit in /usr/local/cuda or pass -DLOCKSTEP_CUDA=OFF")
  endif()
endif()
