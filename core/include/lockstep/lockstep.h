// Everything training code needs: #include <lockstep/lockstep.h>
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
