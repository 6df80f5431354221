// The workload of libevent's test/bench.c: N socketpairs, A tokens, a chain of
// one-byte writes.
//
// Each read end carries read interest. When read end i is readable, the handler
// reads one byte and, while the write budget lasts, writes one byte to the
// write end of pair i+1 (mod N), which makes read end i+1 readable. A tokens
// start spaced N/A apart, so A read ends are ready at any time and every other
// watched fd stays idle: per-event cost shows how a backend scales with idle
// fds (N) and how well it batches ready ones (A).
//
// Single-threaded: a Chain and its SocketPairs belong to the thread that runs
// the loop.

#ifndef FANIN_TESTS_BENCH_REACTOR_CHAIN_H_
#define FANIN_TESTS_BENCH_REACTOR_CHAIN_H_

#include <unistd.h>

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fanin::bench {

// N non-blocking AF_UNIX stream socketpairs. Owns and closes every fd.
class SocketPairs {
 public:
  // Creates n pairs (SOCK_NONBLOCK | SOCK_CLOEXEC). Fails with the errno of
  // socketpair(), e.g. EMFILE when 2n fds do not fit RLIMIT_NOFILE.
  static absl::StatusOr<SocketPairs> Create(int n);
  // Takes ownership of already open fds (read_fds[i] is paired with
  // write_fds[i]).
  static SocketPairs Adopt(std::vector<int> read_fds,
                           std::vector<int> write_fds);

  SocketPairs(SocketPairs&& other) noexcept;
  SocketPairs& operator=(SocketPairs&& other) noexcept;
  SocketPairs(const SocketPairs&) = delete;
  SocketPairs& operator=(const SocketPairs&) = delete;
  ~SocketPairs();

  int size() const { return static_cast<int>(read_fds_.size()); }
  const int* read_fds() const { return read_fds_.data(); }
  const int* write_fds() const { return write_fds_.data(); }
  int read_fd(int i) const { return read_fds_[i]; }
  int max_fd() const;

  // OK when no read end holds unread bytes; otherwise FailedPrecondition naming
  // the first one.
  absl::Status ExpectDrained() const;
  // Reads and discards whatever the read ends hold (after a failed run).
  void Drain() const;

 private:
  SocketPairs() = default;
  void CloseAll();

  std::vector<int> read_fds_;
  std::vector<int> write_fds_;
};

// One run of the write chain over a SocketPairs that must outlive it.
class Chain {
 public:
  // `active` tokens (1 <= active <= pairs->size()), `writes` forwarding writes
  // after them.
  Chain(const SocketPairs* pairs, int active, int64_t writes);

  // Writes the `active` initial bytes, into pairs 0, N/A, 2N/A, ...
  absl::Status Start();

  // A backend reports read end `i` readable (level-triggered contract: one byte
  // is consumed per call, a read end still holding bytes is reported again).
  // Returns true once every byte written has been read, i.e. the loop should
  // stop.
  bool OnReadable(int i) {
    char byte;
    if (::read(read_fds_[i], &byte, 1) != 1) {
      ++empty_reads_;
      return false;
    }
    ++reads_;
    if (writes_left_ > 0) {
      --writes_left_;
      const int next = i + 1 == size_ ? 0 : i + 1;
      if (::write(write_fds_[next], &byte, 1) != 1) {
        // The byte is lost; shrink the target so the loop still ends, and
        // report it.
        ++write_errors_;
        --expected_reads_;
      }
    }
    return reads_ >= expected_reads_;
  }

  // The same step for an edge-triggered backend, which reports a read end once
  // per arrival edge, not while bytes remain. Identical syscalls (one read() of
  // one byte, one write()), so the workload stays the same across backends; the
  // chain counts the bytes it put into every pair, as a protocol that knows its
  // framing would, and sets *more when read end `i` still holds bytes, i.e. the
  // handler must ask to be called again (EventLoop::Redispatch) because no new
  // edge will come for them.
  bool OnReadableEdge(int i, bool* more) {
    char byte;
    if (::read(read_fds_[i], &byte, 1) != 1) {
      ++empty_reads_;
      *more = false;
      return false;
    }
    ++reads_;
    --held_[i];
    if (writes_left_ > 0) {
      --writes_left_;
      const int next = i + 1 == size_ ? 0 : i + 1;
      if (::write(write_fds_[next], &byte, 1) == 1) {
        ++held_[next];
      } else {
        ++write_errors_;
        --expected_reads_;
      }
    }
    *more = held_[i] > 0;
    return reads_ >= expected_reads_;
  }

  bool done() const { return reads_ >= expected_reads_; }
  int size() const { return size_; }
  int read_fd(int i) const { return read_fds_[i]; }
  int64_t reads() const { return reads_; }
  // Reads a run must make: active + writes.
  int64_t target_reads() const { return target_reads_; }
  // Readiness reports that found no byte (spurious wakeups).
  int64_t empty_reads() const { return empty_reads_; }
  int64_t write_errors() const { return write_errors_; }

  // OK when the run completed: reads == active + writes and no write failed.
  absl::Status Verify() const;

 private:
  const int* read_fds_;
  const int* write_fds_;
  int size_;
  int active_;
  int64_t writes_left_;
  int64_t target_reads_;
  int64_t expected_reads_;
  int64_t reads_ = 0;
  int64_t empty_reads_ = 0;
  int64_t write_errors_ = 0;
  // Bytes written into each pair and not yet read by OnReadableEdge (OnReadable
  // does not keep it).
  std::vector<int32_t> held_;
};

}  // namespace fanin::bench

#endif  // FANIN_TESTS_BENCH_REACTOR_CHAIN_H_
