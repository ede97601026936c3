// Everything training code needs: #include <lockstep/lockstep.h>
// The header of the umbrella target lockstep::lockstep, which links every
// component below; a program that links only lockstep::core includes the
// headers of core it uses instead.
#pragma once

#include "lockstep/build_config.h"
#include "lockstep/checkpoint_policy.h"
#include "lockstep/checkpointer.h"
#include "lockstep/communicator.h"
#include "lockstep/config.h"
#include "lockstep/error.h"
#include "lockstep/grad_sync.h"
#include "lockstep/heartbeat.h"
#include "lockstep/knobs.h"
#include "lockstep/log.h"
#include "lockstep/mpi_comm.h"
#include "lockstep/replica_check.h"
#include "lockstep/runtime.h"
#include "lockstep/shard.h"
#include "lockstep/sharded_grad_sync.h"
#include "lockstep/signals.h"
#include "lockstep/tensor.h"
#include "lockstep/work.h"
