// Everything training code needs: #include <lockstep/lockstep.h>
// The headers of the collectives and checkpoint components are included when
// they are on the include path, i.e. when the program links
// lockstep::lockstep rather than lockstep::core alone.
#pragma once

#include "lockstep/build_config.h"
#include "lockstep/config.h"
#include "lockstep/error.h"
#include "lockstep/heartbeat.h"
#include "lockstep/knobs.h"
#include "lockstep/log.h"
#include "lockstep/mpi_comm.h"
#include "lockstep/runtime.h"
#include "lockstep/signals.h"
#include "lockstep/tensor.h"

#if __has_include("lockstep/communicator.h")
#include "lockstep/communicator.h"
#include "lockstep/grad_sync.h"
#include "lockstep/replica_check.h"
#include "lockstep/work.h"
#endif

#if __has_include("lockstep/checkpointer.h")
#include "lockstep/checkpoint_policy.h"
#include "lockstep/checkpointer.h"
#endif
