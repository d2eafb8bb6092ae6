#include "common/metrics/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "prometheus/text_serializer.h"

namespace berry::metrics {
namespace {

// Length of the well-formed UTF-8 sequence starting at `s[i]` (Unicode table 3-7), or 0.
size_t Utf8SequenceLength(std::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const unsigned lead = byte(0);
  if (lead < 0x80) {
    return 1;
  }
  size_t length = 0;
  unsigned second_min = 0x80;
  unsigned second_max = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    second_min = lead == 0xE0 ? 0xA0 : 0x80;  // no overlong forms
    second_max = lead == 0xED ? 0x9F : 0xBF;  // no surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    second_min = lead == 0xF0 ? 0x90 : 0x80;  // no overlong forms
    second_max = lead == 0xF4 ? 0x8F : 0xBF;  // nothing above U+10FFFF
  } else {
    return 0;
  }
  if (i + length > s.size() || byte(1) < second_min || byte(1) > second_max) {
    return 0;
  }
  for (size_t k = 2; k < length; ++k) {
    if (byte(k) < 0x80 || byte(k) > 0xBF) {
      return 0;
    }
  }
  return length;
}

bool IsValidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t length = Utf8SequenceLength(s, i);
    if (length == 0) {
      return false;
    }
    i += length;
  }
  return true;
}

// Bytes that are not UTF-8 (only scrape-time sources can supply them) become U+FFFD so that the
// exposition stays parseable.
std::string SanitizeUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t length = Utf8SequenceLength(s, i);
    if (length == 0) {
      out += "\xEF\xBF\xBD";
      ++i;
      continue;
    }
    out.append(s.substr(i, length));
    i += length;
  }
  return out;
}

// prometheus::TextSerializer writes help text verbatim: escape backslash and newline here, as the
// exposition format wants (label values it escapes itself).
std::string EscapeHelp(std::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (const char c : SanitizeUtf8(help)) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// Metric names may contain colons, label names may not.
bool IsValidName(std::string_view name, bool allow_colon) {
  if (name.empty()) {
    return false;
  }
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (!absl::ascii_isalpha(c) && c != '_' && !(allow_colon && c == ':') &&
        !(i > 0 && absl::ascii_isdigit(c))) {
      return false;
    }
  }
  return true;
}

template <typename T>
prometheus::Family<T>& RegisterIn(prometheus::Registry& registry, const std::string& name,
                                  const std::string& help) {
  if constexpr (std::is_same_v<T, Counter>) {
    return prometheus::BuildCounter().Name(name).Help(help).Register(registry);
  } else if constexpr (std::is_same_v<T, Gauge>) {
    return prometheus::BuildGauge().Name(name).Help(help).Register(registry);
  } else {
    return prometheus::BuildHistogram().Name(name).Help(help).Register(registry);
  }
}

// A gauge or counter family whose samples a callback computes at scrape time.
class CallbackFamily final : public prometheus::Collectable {
 public:
  CallbackFamily(std::string name, std::string help, prometheus::MetricType type,
                 std::vector<std::string> label_names, GaugeCallback callback)
      : name_(std::move(name)),
        help_(std::move(help)),
        type_(type),
        label_names_(std::move(label_names)),
        callback_(std::move(callback)) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    prometheus::MetricFamily family = MakeFamily(name_, help_, type_);
    for (const GaugeSample& sample : callback_()) {
      if (sample.label_values.size() != label_names_.size()) {
        // The callback is Berry's own code, and a malformed line would make every scrape fail.
        std::fprintf(stderr, "metrics: callback for %s returned %zu label values, wants %zu\n",
                     name_.c_str(), sample.label_values.size(), label_names_.size());
        std::abort();
      }
      prometheus::ClientMetric metric = MakeSample(label_names_, sample.label_values);
      if (type_ == prometheus::MetricType::Counter) {
        metric.counter.value = sample.value;
      } else {
        metric.gauge.value = sample.value;
      }
      family.metric.push_back(std::move(metric));
    }
    return {std::move(family)};
  }

 private:
  const std::string name_;
  const std::string help_;
  const prometheus::MetricType type_;
  const std::vector<std::string> label_names_;
  const GaugeCallback callback_;
};

}  // namespace

// A collectable and the family names it may emit.
struct Registry::Source {
  const prometheus::Collectable* collectable;
  std::vector<std::string> names;
};

const std::vector<double>& LatencyBuckets() {
  static const std::vector<double> kBuckets(kLatencyBuckets.begin(), kLatencyBuckets.end());
  return kBuckets;
}

absl::StatusOr<std::vector<double>> ExponentialBuckets(double start, double factor, int count) {
  if (!(start > 0) || !(factor > 1) || count < 1) {
    return absl::InvalidArgumentError(absl::StrCat("exponential buckets need start > 0, factor > 1",
                                                   " and count >= 1; got ", start, ", ", factor,
                                                   ", ", count));
  }
  std::vector<double> bounds;
  bounds.reserve(count);
  for (double bound = start; static_cast<int>(bounds.size()) < count; bound *= factor) {
    if (!std::isfinite(bound)) {
      return absl::InvalidArgumentError("exponential buckets overflow a double");
    }
    bounds.push_back(bound);
  }
  return bounds;
}

HistogramCounts ReadHistogram(const Histogram& histogram) {
  const prometheus::ClientMetric metric = histogram.Collect();
  HistogramCounts out;
  out.count = metric.histogram.sample_count;
  out.sum = metric.histogram.sample_sum;
  uint64_t previous = 0;
  for (const prometheus::ClientMetric::Bucket& bucket : metric.histogram.bucket) {
    if (!std::isinf(bucket.upper_bound)) {
      out.bounds.push_back(bucket.upper_bound);
    }
    out.counts.push_back(bucket.cumulative_count - previous);
    previous = bucket.cumulative_count;
  }
  return out;
}

void AddToHistogram(Histogram& histogram, const std::vector<uint64_t>& counts, double sum) {
  std::vector<double> increments(counts.begin(), counts.end());
  histogram.ObserveMultiple(increments, sum);  // throws (so aborts) on a size mismatch
}

namespace internal {

absl::StatusOr<prometheus::Labels> FamilyBase::ToLabels(
    const std::vector<std::string>& label_values) const {
  if (label_values.size() != label_names_.size()) {
    return absl::InvalidArgumentError(absl::StrCat(name_, " takes ", label_names_.size(),
                                                   " label values, got ", label_values.size()));
  }
  prometheus::Labels labels;
  for (size_t i = 0; i < label_values.size(); ++i) {
    if (!IsValidUtf8(label_values[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          name_, ": label value is not valid UTF-8: ", absl::CEscape(label_values[i])));
    }
    labels.emplace(label_names_[i], label_values[i]);
  }
  return labels;
}

}  // namespace internal

prometheus::MetricFamily MakeFamily(std::string name, const std::string& help,
                                    prometheus::MetricType type) {
  prometheus::MetricFamily family;
  family.name = std::move(name);
  family.help = EscapeHelp(help);
  family.type = type;
  return family;
}

prometheus::ClientMetric MakeSample(const std::vector<std::string>& label_names,
                                    const std::vector<std::string>& label_values) {
  prometheus::ClientMetric metric;
  metric.label.reserve(label_names.size());
  for (size_t i = 0; i < label_names.size() && i < label_values.size(); ++i) {
    metric.label.push_back({label_names[i], SanitizeUtf8(label_values[i])});
  }
  return metric;
}

void SetHistogram(prometheus::ClientMetric& sample, const std::vector<double>& bounds,
                  const std::vector<uint64_t>& counts, double sum) {
  uint64_t cumulative = 0;
  sample.histogram.bucket.clear();
  for (size_t i = 0; i < counts.size(); ++i) {
    cumulative += counts[i];
    sample.histogram.bucket.push_back(
        {.cumulative_count = cumulative,
         .upper_bound = i < bounds.size() ? bounds[i] : std::numeric_limits<double>::infinity()});
  }
  sample.histogram.sample_count = cumulative;
  sample.histogram.sample_sum = sum;
}

Registry::Registry() = default;
Registry::~Registry() = default;

absl::Status Registry::Reserve(std::string_view name_view, std::string_view help,
                               const std::vector<std::string>& label_names, bool histogram) {
  const std::string name(name_view);  // Debian's Abseil StrCat wants its own string_view
  if (!IsValidName(name, /*allow_colon=*/true)) {
    return absl::InvalidArgumentError(absl::StrCat("invalid metric name \"", name, "\""));
  }
  if (!IsValidUtf8(help)) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": help text is not valid UTF-8"));
  }
  std::set<std::string_view> seen;
  for (const std::string& label : label_names) {
    if (!IsValidName(label, /*allow_colon=*/false) || absl::StartsWith(label, "__")) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": invalid label name \"", label, "\""));
    }
    if (label == "le" && histogram) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": label \"le\" is reserved"));
    }
    if (!seen.insert(label).second) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": duplicate label \"", label, "\""));
    }
  }
  mu_.AssertHeld();
  if (std::find(names_.begin(), names_.end(), name) != names_.end()) {
    return absl::AlreadyExistsError(absl::StrCat("metric ", name, " is already registered"));
  }
  names_.emplace_back(name);
  return absl::OkStatus();
}

template <typename T>
absl::StatusOr<Family<T>*> Registry::AddFamily(std::string_view name, std::string_view help,
                                               std::vector<std::string> label_names,
                                               std::vector<double> bounds) {
  absl::MutexLock lock(&mu_);
  if (absl::Status status = Reserve(name, help, label_names, std::is_same_v<T, Histogram>);
      !status.ok()) {
    return status;
  }
  std::string escaped = EscapeHelp(help);
  prometheus::Family<T>& family = RegisterIn<T>(registry_, std::string(name), escaped);
  families_.push_back(std::make_unique<Family<T>>(
      std::string(name), std::move(escaped), std::move(label_names), family, std::move(bounds)));
  return static_cast<Family<T>*>(families_.back().get());
}

absl::StatusOr<Family<Counter>*> Registry::AddCounter(std::string_view name, std::string_view help,
                                                      std::vector<std::string> label_names) {
  return AddFamily<Counter>(name, help, std::move(label_names));
}

absl::StatusOr<Family<Gauge>*> Registry::AddGauge(std::string_view name, std::string_view help,
                                                  std::vector<std::string> label_names) {
  return AddFamily<Gauge>(name, help, std::move(label_names));
}

absl::StatusOr<Family<Histogram>*> Registry::AddHistogram(std::string_view name,
                                                          std::string_view help,
                                                          std::vector<std::string> label_names,
                                                          std::vector<double> bounds) {
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i]) || (i > 0 && !(bounds[i - 1] < bounds[i]))) {
      return absl::InvalidArgumentError(absl::StrCat(
          std::string(name),
          ": histogram bounds must be finite and strictly ascending (+Inf is implicit)"));
    }
  }
  return AddFamily<Histogram>(name, help, std::move(label_names), std::move(bounds));
}

absl::Status Registry::AddCallback(std::string_view name, std::string_view help,
                                   std::vector<std::string> label_names, GaugeCallback callback,
                                   prometheus::MetricType type) {
  absl::MutexLock lock(&mu_);
  if (absl::Status status = Reserve(name, help, label_names, /*histogram=*/false); !status.ok()) {
    return status;
  }
  owned_.push_back(std::make_unique<CallbackFamily>(std::string(name), std::string(help), type,
                                                    std::move(label_names), std::move(callback)));
  sources_.push_back(std::make_unique<Source>(Source{owned_.back().get(), {std::string(name)}}));
  return absl::OkStatus();
}

absl::Status Registry::AddCallbackGauge(std::string_view name, std::string_view help,
                                        std::vector<std::string> label_names,
                                        GaugeCallback callback) {
  return AddCallback(name, help, std::move(label_names), std::move(callback),
                     prometheus::MetricType::Gauge);
}

absl::Status Registry::AddCallbackCounter(std::string_view name, std::string_view help,
                                          std::vector<std::string> label_names,
                                          GaugeCallback callback) {
  return AddCallback(name, help, std::move(label_names), std::move(callback),
                     prometheus::MetricType::Counter);
}

absl::Status Registry::AddCallbackCounter(std::string_view name, std::string_view help,
                                          std::function<double()> callback) {
  return AddCallbackCounter(name, help, {}, [callback = std::move(callback)] {
    return std::vector<GaugeSample>{{.label_values = {}, .value = callback()}};
  });
}

absl::Status Registry::AddCallbackGauge(std::string_view name, std::string_view help,
                                        std::function<double()> callback) {
  return AddCallbackGauge(name, help, {}, [callback = std::move(callback)] {
    return std::vector<GaugeSample>{{.label_values = {}, .value = callback()}};
  });
}

absl::Status Registry::AddCollectable(const prometheus::Collectable& collectable,
                                      std::vector<std::string> family_names) {
  absl::MutexLock lock(&mu_);
  for (size_t i = 0; i < family_names.size(); ++i) {
    if (absl::Status status = Reserve(family_names[i], "", {}, /*histogram=*/false); !status.ok()) {
      names_.resize(names_.size() - i);  // release what this call reserved
      return status;
    }
  }
  sources_.push_back(std::make_unique<Source>(Source{&collectable, std::move(family_names)}));
  return absl::OkStatus();
}

std::string Registry::Render() const {
  std::vector<prometheus::MetricFamily> families = registry_.Collect();
  {
    absl::MutexLock lock(&mu_);
    for (const std::unique_ptr<internal::FamilyBase>& family : families_) {
      if (std::none_of(families.begin(), families.end(), [&](const prometheus::MetricFamily& f) {
            return f.name == family->Name();
          })) {
        families.push_back(family->Empty());
      }
    }
    for (const std::unique_ptr<Source>& source : sources_) {
      for (prometheus::MetricFamily& family : source->collectable->Collect()) {
        if (std::find(source->names.begin(), source->names.end(), family.name) !=
            source->names.end()) {
          families.push_back(std::move(family));
        }
      }
    }
  }
  std::sort(families.begin(), families.end(),
            [](const prometheus::MetricFamily& a, const prometheus::MetricFamily& b) {
              return a.name < b.name;
            });
  for (prometheus::MetricFamily& family : families) {
    for (prometheus::ClientMetric& metric : family.metric) {
      std::sort(metric.label.begin(), metric.label.end());
    }
    std::stable_sort(family.metric.begin(), family.metric.end(),
                     [](const prometheus::ClientMetric& a, const prometheus::ClientMetric& b) {
                       return a.label < b.label;
                     });
  }
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace berry::metrics
