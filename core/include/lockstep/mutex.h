// Locking that the compiler checks. Members shared between threads are
// declared LOCKSTEP_GUARDED_BY(the Mutex that guards them), and functions
// that expect a lock held say so with LOCKSTEP_REQUIRES. Under clang,
// -Wthread-safety then rejects every access made without the lock
// (`tools/check-thread-safety.sh`, part of `make test`); under other
// compilers the annotations compile to nothing and the types below are thin
// wrappers over std::mutex and std::condition_variable.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <utility>

#if defined(__clang__)
#define LOCKSTEP_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define LOCKSTEP_THREAD_ANNOTATION(x)
#endif

#define LOCKSTEP_CAPABILITY(name) LOCKSTEP_THREAD_ANNOTATION(capability(name))
#define LOCKSTEP_SCOPED_CAPABILITY LOCKSTEP_THREAD_ANNOTATION(scoped_lockable)
#define LOCKSTEP_GUARDED_BY(mutex) LOCKSTEP_THREAD_ANNOTATION(guarded_by(mutex))
#define LOCKSTEP_PT_GUARDED_BY(mutex) LOCKSTEP_THREAD_ANNOTATION(pt_guarded_by(mutex))
#define LOCKSTEP_ACQUIRE(...) LOCKSTEP_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define LOCKSTEP_RELEASE(...) LOCKSTEP_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define LOCKSTEP_REQUIRES(...) LOCKSTEP_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define LOCKSTEP_EXCLUDES(...) LOCKSTEP_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))

namespace lockstep {

// A std::mutex the analysis knows as a capability.
class LOCKSTEP_CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() LOCKSTEP_ACQUIRE() { mutex_.lock(); }
  void unlock() LOCKSTEP_RELEASE() { mutex_.unlock(); }

 private:
  friend class MutexLock;
  std::mutex mutex_;
};

// Holds a Mutex for its scope. unlock() and lock() let a caller drop the
// mutex for a slow call in the middle of the scope; the analysis follows.
class LOCKSTEP_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mutex) LOCKSTEP_ACQUIRE(mutex) : lock_(mutex.mutex_) {}
  ~MutexLock() LOCKSTEP_RELEASE() {}
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

  void unlock() LOCKSTEP_RELEASE() { lock_.unlock(); }
  void lock() LOCKSTEP_ACQUIRE() { lock_.lock(); }

 private:
  friend class CondVar;
  std::unique_lock<std::mutex> lock_;
};

// A condition variable used with a MutexLock. The predicates run with the
// mutex held; a lambda that reads guarded members says so:
//   ready_.wait(lock, [this]() LOCKSTEP_REQUIRES(mutex_) { return done_; });
class CondVar {
 public:
  void notify_one() noexcept { cv_.notify_one(); }
  void notify_all() noexcept { cv_.notify_all(); }

  // Without a predicate: may wake spuriously; the caller loops.
  void wait(MutexLock& lock) { cv_.wait(lock.lock_); }
  template <class Rep, class Period>
  std::cv_status wait_for(MutexLock& lock, std::chrono::duration<Rep, Period> timeout) {
    return cv_.wait_for(lock.lock_, timeout);
  }
  template <class Clock, class Duration>
  std::cv_status wait_until(MutexLock& lock, std::chrono::time_point<Clock, Duration> deadline) {
    return cv_.wait_until(lock.lock_, deadline);
  }

  template <class Predicate>
  void wait(MutexLock& lock, Predicate ready) {
    cv_.wait(lock.lock_, std::move(ready));
  }
  // False when `timeout` passed with `ready` still false.
  template <class Rep, class Period, class Predicate>
  bool wait_for(MutexLock& lock, std::chrono::duration<Rep, Period> timeout, Predicate ready) {
    return cv_.wait_for(lock.lock_, timeout, std::move(ready));
  }
  template <class Clock, class Duration, class Predicate>
  bool wait_until(MutexLock& lock, std::chrono::time_point<Clock, Duration> deadline,
                  Predicate ready) {
    return cv_.wait_until(lock.lock_, deadline, std::move(ready));
  }

 private:
  std::condition_variable cv_;
};

}  // namespace lockstep
