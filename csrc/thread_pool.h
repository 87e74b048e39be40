// Persistent worker threads for batch mask filling (fill_next_token_bitmasks): spawning threads
// per call costs more than a warm mask (a few microseconds).
//
// One pool per process id, so that a forked child (multiprocessing) builds its own instead of
// waiting on its parent's threads (a stale parent's pool is leaked, never joined). Workers are
// detached and live for the process. run() calls are serialized: one batch at a time; the
// caller's thread works too. Invariant: between run() calls every worker waits on cv_ and no
// job pointer is held.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>

namespace toolken {

class WorkerPool {
 public:
  // The current process's pool (created on first use).
  static WorkerPool& get();
  // Calls fn(i) for every i in [0, n) on `threads` threads (the caller's included); rethrows
  // the last exception a call threw, after every call finished.
  void run(size_t n, size_t threads, const std::function<void(size_t)>& fn);

 private:
  WorkerPool();
  void work();
  void loop(size_t id);
  pid_t pid_;
  std::mutex run_mu_, mu_;
  std::condition_variable cv_, done_;
  size_t num_workers_ = 0, n_ = 0, wanted_ = 0, remaining_ = 0;
  uint64_t generation_ = 0;
  std::atomic<size_t> next_{0};
  const std::function<void(size_t)>* job_ = nullptr;
  std::exception_ptr err_;
};

}  // namespace toolken
