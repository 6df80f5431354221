// The load generator's wire format and the checks every receiver (floor, C++
// subscriber) runs on it.
//
// Each connection carries fixed-size messages:
//   [u32 connection index][u32 seq][u64 send time, CLOCK_MONOTONIC ns][padding]
// in host byte order (every process runs on the same machine). seq starts at 0
// on every connection and grows by one per message.
//
// Not thread-safe: one StreamVerifier per receiving thread.
#ifndef FANIN_TESTS_BENCH_E2E_FRAME_H_
#define FANIN_TESTS_BENCH_E2E_FRAME_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "tests/bench/e2e/histogram.h"

namespace fanin::bench {

inline constexpr size_t kHeaderBytes = 16;
inline constexpr size_t kDefaultMessageBytes = 64;

// CLOCK_MONOTONIC in nanoseconds; shared by every process on the machine.
int64_t MonotonicNanos();

// Writes one message of `size` (>= kHeaderBytes) bytes into `out`; the
// padding is left as it was (callers fill it once).
void EncodeMessage(uint32_t index, uint32_t seq, int64_t send_ns, char* out);

// Reassembles each connection's byte stream, parses messages out of it and
// checks that every connection carries one index with seq 0, 1, 2, ...
// Records latency (arrival - send time) of every message.
class StreamVerifier {
 public:
  explicit StreamVerifier(size_t message_bytes);

  // Bytes of connection `key` (a connection id or fd generation) arrived at
  // `arrival_ns`. `bytes` may hold several messages or part of one.
  void OnBytes(uint64_t key, absl::string_view bytes, int64_t arrival_ns);
  // The connection ended; a trailing partial message counts as an error.
  void OnClose(uint64_t key);

  uint64_t messages() const { return messages_; }
  uint64_t bytes() const { return bytes_; }
  // Messages whose seq was not the one expected (loss, reordering or
  // duplication), a second connection claiming an index already seen, or a
  // connection closed in the middle of a message.
  uint64_t errors() const { return errors_; }
  const std::string& first_error() const { return first_error_; }
  size_t connections_seen() const { return conns_.size(); }
  int64_t first_arrival_ns() const { return first_arrival_ns_; }
  int64_t last_arrival_ns() const { return last_arrival_ns_; }
  const Histogram& latency() const { return latency_; }

 private:
  struct Conn {
    std::string partial;  // bytes of an unfinished message
    int64_t index = -1;   // connection index carried by its messages
    uint32_t next_seq = 0;
  };
  void Fail(std::string what);
  void Parse(Conn& conn, const char* msg, int64_t arrival_ns);

  size_t message_bytes_;
  absl::flat_hash_map<uint64_t, Conn> conns_;
  absl::flat_hash_map<uint32_t, uint64_t> index_owner_;
  uint64_t messages_ = 0;
  uint64_t bytes_ = 0;
  uint64_t errors_ = 0;
  std::string first_error_;
  int64_t first_arrival_ns_ = 0;
  int64_t last_arrival_ns_ = 0;
  Histogram latency_;
};

// The fields every receiver reports, as the inside of a JSON object:
// "messages":..,"bytes":..,"errors":..,"first_error":"..","elapsed_s":..,
// "messages_per_s":..,"p50_us":..,"p99_us":..,"p999_us":..,"max_us":..
std::string VerifierJsonFields(const StreamVerifier& verifier);

// Writes `text` to `path` through a temporary file and rename, so a reader
// polling for `path` never sees half of it. Returns false on failure.
bool WriteFileAtomically(const std::string& path, const std::string& text);

}  // namespace fanin::bench

#endif  // FANIN_TESTS_BENCH_E2E_FRAME_H_
