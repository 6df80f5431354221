// MakeDataEvent (per read) and AppendBatchResponse (per batch) at the sizes
// the end-to-end benchmark uses (64-byte messages, batches of ~100) and at a
// full 64 KiB read. items/s counts events.
#include <cstdint>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "server/fanout/event_codec.h"
#include "server/fanout/stored_event.h"
#include "server/grpc/batch_encoder.h"

namespace fanin::fanout {
namespace {

void BM_MakeDataEvent(benchmark::State& state) {
  const std::string payload(static_cast<size_t>(state.range(0)), 'x');
  uint64_t id = 1;
  for (auto _ : state) {
    auto e =
        MakeDataEvent(id++, 0, "default", "", 1700000000000000000, payload);
    benchmark::DoNotOptimize(e);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_MakeDataEvent)->Arg(64)->Arg(65536);

// range(0): payload bytes; range(1): 0 whole, 1 omit, 2 cut to 16 bytes.
void BM_AppendBatchResponse(benchmark::State& state) {
  std::vector<EventPtr> events;
  const std::string payload(static_cast<size_t>(state.range(0)), 'x');
  for (int i = 0; i < 100; ++i) {
    auto e = MakeDataEvent(1000 + i, 0, "default", "", 1700000000000000000 + i,
                           payload);
    e->seq = (uint64_t{1} << 40) + i;
    events.push_back(e);
  }
  PayloadPolicy policy;
  if (state.range(1) == 1) policy.omit = true;
  if (state.range(1) == 2) policy.max = 16;
  for (auto _ : state) {
    std::string wire;
    grpc_api::AppendBatchResponse(events, policy, &wire);
    benchmark::DoNotOptimize(wire);
  }
  state.SetItemsProcessed(state.iterations() * events.size());
}
BENCHMARK(BM_AppendBatchResponse)
    ->Args({64, 0})
    ->Args({64, 1})
    ->Args({64, 2})
    ->Args({4096, 0});

}  // namespace
}  // namespace fanin::fanout

BENCHMARK_MAIN();
