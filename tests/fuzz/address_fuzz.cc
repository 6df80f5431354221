// Fuzzes the one parser of the address grammar (--listen, --grpc_address,
// --metrics_address): anything either parses into an Endpoint / ListenSpec
// whose canonical text parses back to the same value, or is refused with
// INVALID_ARGUMENT.
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "server/net/address.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  auto endpoint = fanin::net::Endpoint::Parse(text);
  if (endpoint.ok()) {
    const std::string canonical = endpoint->ToString();
    auto again = fanin::net::Endpoint::Parse(canonical);
    FUZZ_CHECK(again.ok(), "canonical text does not parse: " + canonical);
    FUZZ_CHECK(*again == *endpoint, "round trip changed " + canonical);
    FUZZ_CHECK(again->ToString() == canonical, canonical);
  } else {
    FUZZ_CHECK(endpoint.status().code() == absl::StatusCode::kInvalidArgument,
               std::string(endpoint.status().message()));
  }
  auto spec = fanin::net::ParseListenSpec(text);
  if (spec.ok()) {
    const std::string canonical = fanin::net::ListenSpecToString(*spec);
    auto again = fanin::net::ParseListenSpec(canonical);
    FUZZ_CHECK(again.ok(), "canonical spec does not parse: " + canonical);
    FUZZ_CHECK(again->name == spec->name && again->endpoint == spec->endpoint,
               "round trip changed " + canonical);
    FUZZ_CHECK(!spec->name.empty(), "a listener without a name");
  } else {
    FUZZ_CHECK(spec.status().code() == absl::StatusCode::kInvalidArgument,
               std::string(spec.status().message()));
  }
  return 0;
}
