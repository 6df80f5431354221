// A log-linear histogram of non-negative 64-bit values (nanoseconds here):
// exact below 128, then 64 buckets per power of two (under 1.6% error).
// Fixed size (about 30 KiB), so memory stays bounded however many values.
//
// Not thread-safe.
#ifndef FANIN_TESTS_BENCH_E2E_HISTOGRAM_H_
#define FANIN_TESTS_BENCH_E2E_HISTOGRAM_H_

#include <cstdint>
#include <string>
#include <vector>

namespace fanin::bench {

class Histogram {
 public:
  Histogram();

  void Record(int64_t value);  // negative values count as 0
  void Merge(const Histogram& other);

  uint64_t count() const { return count_; }
  int64_t max() const { return max_; }
  // The value at quantile q in [0, 1] (bucket midpoint); 0 when empty.
  int64_t Quantile(double q) const;
  // "value cumulative_fraction" lines, one per non-empty bucket, values
  // divided by `divisor` (e.g. 1000 for microseconds): a CDF for gnuplot.
  std::string CdfText(double divisor) const;

 private:
  static int BucketOf(uint64_t value);
  static int64_t MidpointOf(int bucket);

  std::vector<uint64_t> buckets_;
  uint64_t count_ = 0;
  int64_t max_ = 0;
};

}  // namespace fanin::bench

#endif  // FANIN_TESTS_BENCH_E2E_HISTOGRAM_H_
