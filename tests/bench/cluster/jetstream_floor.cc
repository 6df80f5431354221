// The JetStream floor: what a bare libnats program gets from the broker that
// fanin's cluster mode publishes to, with none of fanin's work. It creates a
// stream configured as fanin creates its own (storage, 2 min duplicate window,
// retention), publishes --events events of --event_bytes bytes, checks that
// the stream holds every message, deletes the stream and prints one JSON line.
//
//   jetstream_floor --nats=nats://127.0.0.1:4222 --stream=floor1
//     --events=300000 --events_per_message=1 --mode=async
//
// --mode=async: js_PublishAsync with up to --max_pending acks outstanding
//   (the broker's best case; one in flight per event is not what fanin does).
// --mode=sync: what fanin's publisher does, minus fanin: one js_PublishMsg
//   at a time, each with a message id, Nats-Expected-Last-Sequence and the
//   Fanin-Base/Fanin-Count headers, waiting for its ack.
// --events_per_message=N packs N events per message, each with a varint
// length in front, as fanin packs a batch.
//
// --delete_streams=NAME[,NAME...] only deletes those streams (the driver's
// clean-up of fanin's stream and KV buckets between rounds) and exits.
#include <nats/nats.h>
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

ABSL_FLAG(std::string, nats, "", "nats://HOST:PORT");
ABSL_FLAG(std::string, stream, "floor", "stream to create (subjects NAME.>)");
ABSL_FLAG(std::string, storage, "file", "file or memory, as --cluster_storage");
ABSL_FLAG(int64_t, events, 100000, "events to publish");
ABSL_FLAG(int, event_bytes, 64, "bytes per event");
ABSL_FLAG(int, events_per_message, 1, "events packed into one message");
ABSL_FLAG(std::string, mode, "async", "async or sync (see the file comment)");
ABSL_FLAG(int64_t, max_pending, 4096, "async: acks outstanding at most");
ABSL_FLAG(std::string, delete_streams, "",
          "comma-separated streams to delete; nothing else is done");

namespace fanin::bench {
namespace {

struct Deleter {
  void operator()(natsConnection* p) const { natsConnection_Destroy(p); }
  void operator()(jsCtx* p) const { jsCtx_Destroy(p); }
  void operator()(jsStreamInfo* p) const { jsStreamInfo_Destroy(p); }
  void operator()(jsPubAck* p) const { jsPubAck_Destroy(p); }
  void operator()(natsMsg* p) const { natsMsg_Destroy(p); }
};
template <typename T>
using Ptr = std::unique_ptr<T, Deleter>;

std::atomic<uint64_t> g_async_errors{0};

void OnAsyncError(jsCtx*, jsPubAckErr* pae, void*) {
  if (g_async_errors.fetch_add(1) == 0) {
    std::fprintf(stderr, "jetstream_floor: async publish failed: %s (%d)\n",
                 pae->ErrText != nullptr ? pae->ErrText : "?", pae->ErrCode);
  }
}

int64_t Now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

double CpuSeconds() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec +
         (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

int Fail(const char* what, natsStatus s, jsErrCode jerr = jsErrCode(0)) {
  std::fprintf(stderr, "jetstream_floor: %s: %s (jetstream error %d) %s\n",
               what, natsStatus_GetText(s), static_cast<int>(jerr),
               nats_GetLastError(nullptr));
  return 1;
}

// One message: `events` events; packed (as fanin lays out a batch) each has
// its varint length first.
std::string MakePayload(int events, int event_bytes, bool packed) {
  std::string event(event_bytes, 'x');
  std::string out;
  for (int i = 0; i < events; ++i) {
    if (packed) {
      for (uint32_t n = event_bytes; true; n >>= 7) {
        if (n < 0x80) {
          out.push_back(static_cast<char>(n));
          break;
        }
        out.push_back(static_cast<char>((n & 0x7f) | 0x80));
      }
    }
    out += event;
  }
  return out;
}

int Main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  natsConnection* raw_nc = nullptr;
  natsStatus s =
      natsConnection_ConnectTo(&raw_nc, absl::GetFlag(FLAGS_nats).c_str());
  if (s != NATS_OK) return Fail("connect", s);
  Ptr<natsConnection> nc(raw_nc);
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = 10000;
  jo.PublishAsync.MaxPending = absl::GetFlag(FLAGS_max_pending);
  jo.PublishAsync.ErrHandler = &OnAsyncError;
  jsCtx* raw_js = nullptr;
  s = natsConnection_JetStream(&raw_js, nc.get(), &jo);
  if (s != NATS_OK) return Fail("JetStream context", s);
  Ptr<jsCtx> js(raw_js);

  if (!absl::GetFlag(FLAGS_delete_streams).empty()) {
    int missing = 0;
    for (absl::string_view name : absl::StrSplit(
             absl::GetFlag(FLAGS_delete_streams), ',', absl::SkipEmpty())) {
      jsErrCode jerr = jsErrCode(0);
      s = js_DeleteStream(js.get(), std::string(name).c_str(), nullptr, &jerr);
      if (s != NATS_OK) ++missing;
    }
    std::printf("{\"event\":\"deleted\",\"not_found\":%d}\n", missing);
    return 0;
  }

  const std::string stream = absl::GetFlag(FLAGS_stream);
  const std::string subjects_pattern = stream + ".>";
  const char* subjects[] = {subjects_pattern.c_str()};
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  cfg.Name = stream.c_str();
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  cfg.Storage = absl::GetFlag(FLAGS_storage) == "memory" ? js_MemoryStorage
                                                         : js_FileStorage;
  cfg.MaxBytes = int64_t{1} << 30;
  cfg.MaxAge = int64_t{24} * 3600 * 1000000000;
  cfg.Duplicates = int64_t{120} * 1000000000;
  cfg.AllowDirect = true;
  jsStreamInfo* raw_si = nullptr;
  jsErrCode jerr = jsErrCode(0);
  s = js_AddStream(&raw_si, js.get(), &cfg, nullptr, &jerr);
  if (s != NATS_OK) return Fail("creating the stream", s, jerr);
  Ptr<jsStreamInfo> created(raw_si);

  const int64_t events = absl::GetFlag(FLAGS_events);
  const int per = std::max(1, absl::GetFlag(FLAGS_events_per_message));
  const int event_bytes = absl::GetFlag(FLAGS_event_bytes);
  const std::string full = MakePayload(per, event_bytes, per > 1);
  const std::string subject = stream + ".ev.floor";
  const bool sync = absl::GetFlag(FLAGS_mode) == "sync";
  int64_t messages = 0;
  uint64_t last_seq = created->State.LastSeq;
  uint64_t next_base = 1;
  const double cpu0 = CpuSeconds();
  const int64_t start = Now();
  for (int64_t done = 0; done < events; ++messages) {
    const int n = static_cast<int>(std::min<int64_t>(per, events - done));
    const std::string last =
        n == per ? std::string() : MakePayload(n, event_bytes, per > 1);
    const std::string& payload = n == per ? full : last;
    if (!sync) {
      s = js_PublishAsync(js.get(), subject.c_str(), payload.data(),
                          static_cast<int>(payload.size()), nullptr);
      if (s != NATS_OK) return Fail("js_PublishAsync", s);
    } else {
      natsMsg* raw_msg = nullptr;
      natsMsg_Create(&raw_msg, subject.c_str(), nullptr, payload.data(),
                     static_cast<int>(payload.size()));
      Ptr<natsMsg> msg(raw_msg);
      natsMsgHeader_Set(msg.get(), "Fanin-Base",
                        absl::StrCat(next_base).c_str());
      natsMsgHeader_Set(msg.get(), "Fanin-Count", absl::StrCat(n).c_str());
      const std::string id = absl::StrCat("floor-1-", messages, "-", last_seq);
      jsPubOptions po;
      jsPubOptions_Init(&po);
      po.MsgId = id.c_str();
      po.ExpectLastSeq = last_seq;
      jsPubAck* raw_ack = nullptr;
      s = js_PublishMsg(&raw_ack, js.get(), msg.get(), &po, &jerr);
      if (s != NATS_OK) return Fail("js_PublishMsg", s, jerr);
      Ptr<jsPubAck> ack(raw_ack);
      last_seq = ack->Sequence;
      next_base += n;
    }
    done += n;
  }
  if (!sync) {
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 60000;
    s = js_PublishAsyncComplete(js.get(), &po);
    if (s != NATS_OK) return Fail("js_PublishAsyncComplete", s);
  }
  const int64_t elapsed = Now() - start;
  const double cpu = CpuSeconds() - cpu0;

  raw_si = nullptr;
  s = js_GetStreamInfo(&raw_si, js.get(), stream.c_str(), nullptr, &jerr);
  if (s != NATS_OK) return Fail("stream info", s, jerr);
  Ptr<jsStreamInfo> info(raw_si);
  const uint64_t stored = info->State.Msgs;
  const uint64_t stored_bytes = info->State.Bytes;
  info.reset();
  js_DeleteStream(js.get(), stream.c_str(), nullptr, &jerr);
  const bool ok =
      stored == static_cast<uint64_t>(messages) && g_async_errors.load() == 0;
  absl::PrintF(
      "{\"event\":\"done\",\"mode\":\"%s\",\"events\":%d,\"messages\":%d,"
      "\"events_per_message\":%d,\"event_bytes\":%d,\"elapsed_s\":%.6f,"
      "\"events_per_s\":%.1f,\"messages_per_s\":%.1f,\"cpu_s\":%.3f,"
      "\"stored_messages\":%d,\"stored_bytes\":%d,\"async_errors\":%d,"
      "\"ok\":%s}\n",
      sync ? "sync" : "async", events, messages, per, event_bytes,
      elapsed / 1e9, events * 1e9 / std::max<int64_t>(1, elapsed),
      messages * 1e9 / std::max<int64_t>(1, elapsed), cpu, stored, stored_bytes,
      g_async_errors.load(), ok ? "true" : "false");
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace fanin::bench

int main(int argc, char** argv) { return fanin::bench::Main(argc, argv); }
