// How fast `fanin watch` can render events: the per-event cost of each
// output mode's formatting (the gRPC stream is measured elsewhere).
//   bazel run -c opt //tests/client:format_benchmark
#include <string>

#include "benchmark/benchmark.h"
#include "client/format.h"

namespace fanin::cli {
namespace {

v1::Event DataEvent(size_t payload_bytes) {
  v1::Event e;
  e.set_seq(123456789);
  e.set_time_unix_nano(1795765373123456789u);
  e.set_connection_id(4242);
  e.set_listener("default");
  std::string payload;
  for (size_t i = 0; i < payload_bytes; ++i) {
    payload.push_back(static_cast<char>(i * 31));  // mixed printable/binary
  }
  e.mutable_data()->set_size(static_cast<uint32_t>(payload_bytes));
  e.mutable_data()->set_payload(std::move(payload));
  return e;
}

void BM_EventText(benchmark::State& state) {
  v1::Event e = DataEvent(static_cast<size_t>(state.range(0)));
  for (auto _ : state) benchmark::DoNotOptimize(FormatEventText(e));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_EventText)->Arg(64)->Arg(4096);

void BM_EventJson(benchmark::State& state) {
  v1::Event e = DataEvent(static_cast<size_t>(state.range(0)));
  for (auto _ : state) benchmark::DoNotOptimize(MessageJson(e));
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_EventJson)->Arg(64)->Arg(4096);

void BM_OpenedJson(benchmark::State& state) {
  v1::Event e;
  e.set_seq(1);
  e.set_connection_id(2);
  e.set_listener("default");
  e.mutable_opened()->set_remote_address("127.0.0.1:54321");
  e.mutable_opened()->set_local_address("127.0.0.1:7070");
  for (auto _ : state) benchmark::DoNotOptimize(MessageJson(e));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_OpenedJson);

void BM_StatsJson(benchmark::State& state) {
  v1::GetStatsResponse s;
  s.set_poller("epoll");
  s.set_connections_open(1000);
  s.set_events_published(123456789);
  s.set_head_seq(123456789);
  for (auto _ : state) benchmark::DoNotOptimize(MessageJson(s));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_StatsJson);

}  // namespace
}  // namespace fanin::cli

BENCHMARK_MAIN();
