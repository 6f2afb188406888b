// Persistent worker threads for the kernels' drivers (parallel_ranges.hpp). A call hands its tasks
// to threads that already exist instead of starting and joining a thread per task, which cost
// 50-100 us a call on a 2-vCPU VM: more than the work of a 1M-element cast on one thread.
// docs/design/0002-cpu-kernels.md ("Threads") records the choices.
#pragma once
#include <cstdint>

namespace qcast::kernels {

// Runs task(context, k) once for every k in [0, count), on the calling thread and on up to
// threads - 1 workers of the process's pool (started on first use, grown to the largest threads
// asked for), and returns when all have run. The caller runs every task no worker has taken, so a
// call never waits for a busy pool: a pool that cannot start threads, a task that calls
// run_tasks itself (its tasks then run on that thread, in order) and a child process after fork()
// all get every task run. The first exception a task throws is rethrown here, after the
// other tasks have finished.
void run_tasks(int count, int threads, void (*task)(void* context, int k), void* context);

}  // namespace qcast::kernels
