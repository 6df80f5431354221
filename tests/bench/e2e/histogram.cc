#include "tests/bench/e2e/histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

#include "absl/strings/str_format.h"

namespace fanin::bench {
namespace {
constexpr int kSubBits = 6;  // 64 buckets per power of two
constexpr int kSub = 1 << kSubBits;
// Highest bucket: msb 63 gives shift 57 and mantissa up to 127.
constexpr int kBuckets = kSub * (63 - kSubBits) + 2 * kSub;
}  // namespace

Histogram::Histogram() : buckets_(kBuckets, 0) {}

int Histogram::BucketOf(uint64_t value) {
  if (value < 2 * kSub) return static_cast<int>(value);
  const int msb = 63 - std::countl_zero(value);
  const int shift = msb - kSubBits;
  return kSub * shift + static_cast<int>(value >> shift);
}

int64_t Histogram::MidpointOf(int bucket) {
  if (bucket < 2 * kSub) return bucket;
  const int shift = bucket / kSub - 1;
  const uint64_t low = static_cast<uint64_t>(bucket - kSub * shift) << shift;
  return static_cast<int64_t>(low + (uint64_t{1} << shift) / 2);
}

void Histogram::Record(int64_t value) {
  if (value < 0) value = 0;
  ++buckets_[BucketOf(static_cast<uint64_t>(value))];
  ++count_;
  max_ = std::max(max_, value);
}

void Histogram::Merge(const Histogram& other) {
  for (int i = 0; i < kBuckets; ++i) buckets_[i] += other.buckets_[i];
  count_ += other.count_;
  max_ = std::max(max_, other.max_);
}

int64_t Histogram::Quantile(double q) const {
  if (count_ == 0) return 0;
  // The smallest bucket whose cumulative count reaches ceil(q * count).
  uint64_t rank =
      static_cast<uint64_t>(std::ceil(q * static_cast<double>(count_)));
  if (rank < 1) rank = 1;
  if (rank > count_) rank = count_;
  uint64_t seen = 0;
  for (int i = 0; i < kBuckets; ++i) {
    seen += buckets_[i];
    if (seen >= rank) return std::min(MidpointOf(i), max_);
  }
  return max_;
}

std::string Histogram::CdfText(double divisor) const {
  std::string out;
  uint64_t seen = 0;
  for (int i = 0; i < kBuckets && count_ > 0; ++i) {
    if (buckets_[i] == 0) continue;
    seen += buckets_[i];
    absl::StrAppendFormat(
        &out, "%.3f %.6f\n",
        static_cast<double>(std::min(MidpointOf(i), max_)) / divisor,
        static_cast<double>(seen) / count_);
  }
  return out;
}

}  // namespace fanin::bench
