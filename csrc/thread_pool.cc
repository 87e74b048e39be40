#include "thread_pool.h"

#include <unistd.h>

#include <thread>

namespace toolken {

WorkerPool& WorkerPool::get() {
  static std::mutex mu;
  static WorkerPool* pool = nullptr;
  std::lock_guard<std::mutex> lock(mu);
  if (!pool || pool->pid_ != getpid()) pool = new WorkerPool();  // a stale parent's pool is leaked
  return *pool;
}

WorkerPool::WorkerPool() : pid_(getpid()) {}

void WorkerPool::run(size_t n, size_t threads, const std::function<void(size_t)>& fn) {
  std::lock_guard<std::mutex> serial(run_mu_);
  size_t helpers = threads - 1;
  {
    std::lock_guard<std::mutex> lock(mu_);
    while (num_workers_ < helpers) {
      std::thread([this, id = num_workers_]() { loop(id); }).detach();
      ++num_workers_;
    }
    job_ = &fn;
    n_ = n;
    next_ = 0;
    wanted_ = helpers;
    remaining_ = helpers;
    err_ = nullptr;
    ++generation_;
  }
  cv_.notify_all();
  work();
  std::unique_lock<std::mutex> lock(mu_);
  done_.wait(lock, [&]() { return remaining_ == 0; });
  job_ = nullptr;
  if (err_) std::rethrow_exception(err_);
}

void WorkerPool::work() {
  for (size_t i; (i = next_.fetch_add(1)) < n_;) {
    try {
      (*job_)(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      err_ = std::current_exception();
    }
  }
}

void WorkerPool::loop(size_t id) {
  uint64_t seen = 0;
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&]() { return generation_ != seen && id < wanted_; });
    seen = generation_;
    lock.unlock();
    work();
    lock.lock();
    if (--remaining_ == 0) done_.notify_all();
  }
}

}  // namespace toolken
