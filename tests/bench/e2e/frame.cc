#include "tests/bench/e2e/frame.h"

#include <time.h>

#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"

namespace fanin::bench {

int64_t MonotonicNanos() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

void EncodeMessage(uint32_t index, uint32_t seq, int64_t send_ns, char* out) {
  std::memcpy(out, &index, 4);
  std::memcpy(out + 4, &seq, 4);
  std::memcpy(out + 8, &send_ns, 8);
}

StreamVerifier::StreamVerifier(size_t message_bytes)
    : message_bytes_(message_bytes) {}

void StreamVerifier::Fail(std::string what) {
  if (errors_++ == 0) first_error_ = std::move(what);
}

void StreamVerifier::Parse(Conn& conn, const char* msg, int64_t arrival_ns) {
  uint32_t index, seq;
  int64_t send_ns;
  std::memcpy(&index, msg, 4);
  std::memcpy(&seq, msg + 4, 4);
  std::memcpy(&send_ns, msg + 8, 8);
  if (conn.index < 0) {
    conn.index = index;
  } else if (conn.index != index) {
    Fail(absl::StrCat("connection index changed from ", conn.index, " to ",
                      index));
  }
  if (seq != conn.next_seq) {
    Fail(absl::StrCat("connection index ", index, ": seq ", seq, " where ",
                      conn.next_seq, " was expected"));
  }
  conn.next_seq = seq + 1;
  ++messages_;
  latency_.Record(arrival_ns - send_ns);
}

void StreamVerifier::OnBytes(uint64_t key, absl::string_view bytes,
                             int64_t arrival_ns) {
  if (bytes.empty()) return;
  if (first_arrival_ns_ == 0) first_arrival_ns_ = arrival_ns;
  last_arrival_ns_ = arrival_ns;
  bytes_ += bytes.size();
  Conn& conn = conns_[key];
  const bool fresh = conn.index < 0;
  if (!conn.partial.empty()) {
    const size_t need = message_bytes_ - conn.partial.size();
    const size_t take = std::min(need, bytes.size());
    conn.partial.append(bytes.data(), take);
    bytes.remove_prefix(take);
    if (conn.partial.size() < message_bytes_) return;
    Parse(conn, conn.partial.data(), arrival_ns);
    conn.partial.clear();
  }
  while (bytes.size() >= message_bytes_) {
    Parse(conn, bytes.data(), arrival_ns);
    bytes.remove_prefix(message_bytes_);
  }
  conn.partial.assign(bytes.data(), bytes.size());
  if (fresh && conn.index >= 0) {
    auto [it, inserted] =
        index_owner_.emplace(static_cast<uint32_t>(conn.index), key);
    if (!inserted) {
      Fail(absl::StrCat("connection index ", conn.index,
                        " seen on two connections"));
    }
  }
}

void StreamVerifier::OnClose(uint64_t key) {
  auto it = conns_.find(key);
  if (it == conns_.end()) return;
  if (!it->second.partial.empty()) {
    Fail(absl::StrCat("connection index ", it->second.index, " closed with ",
                      it->second.partial.size(),
                      " bytes of an unfinished message"));
  }
}

std::string VerifierJsonFields(const StreamVerifier& v) {
  const int64_t span = v.last_arrival_ns() - v.first_arrival_ns();
  const Histogram& h = v.latency();
  const std::string error =
      absl::StrReplaceAll(v.first_error(), {{"\\", "\\\\"}, {"\"", "\\\""}});
  return absl::StrFormat(
      "\"messages\":%d,\"bytes\":%d,\"errors\":%d,\"first_error\":\"%s\","
      "\"connections_seen\":%d,\"elapsed_s\":%.6f,\"messages_per_s\":%.1f,"
      "\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f",
      v.messages(), v.bytes(), v.errors(), error, v.connections_seen(),
      span / 1e9, span > 0 ? v.messages() * 1e9 / span : 0.0,
      h.Quantile(0.5) / 1e3, h.Quantile(0.99) / 1e3, h.Quantile(0.999) / 1e3,
      h.max() / 1e3);
}

bool WriteFileAtomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (f == nullptr) return false;
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (std::fclose(f) != 0 || !ok) return false;
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

}  // namespace fanin::bench
