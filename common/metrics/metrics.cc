#include "common/metrics/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace berry::metrics {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Integers print as integers (`3`, not `3e+00`); everything else in the shortest form that reads
// back as the same double. Integral values up to 1e15 are exact in a double, so the cast is too.
void AppendNumber(std::string& out, double value) {
  if (std::isnan(value)) {
    out += "NaN";
    return;
  }
  if (std::isinf(value)) {
    out += value > 0 ? "+Inf" : "-Inf";
    return;
  }
  char buf[32];
  const std::to_chars_result result =
      value == std::trunc(value) && std::abs(value) < 1e15
          ? std::to_chars(buf, buf + sizeof(buf), static_cast<int64_t>(value))
          : std::to_chars(buf, buf + sizeof(buf), value);
  out.append(buf, result.ptr);
}

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

// Escapes backslash, newline and, in label values, double quote. Bytes that are not UTF-8 (only
// gauge callbacks can supply them) become U+FFFD so that the exposition stays parseable.
void AppendEscaped(std::string& out, std::string_view s, bool escape_quote) {
  for (size_t i = 0; i < s.size();) {
    const size_t length = Utf8SequenceLength(s, i);
    if (length == 0) {
      out += "\xEF\xBF\xBD";
      ++i;
      continue;
    }
    const char c = s[i];
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && escape_quote) {
      out += "\\\"";
    } else {
      out.append(s.substr(i, length));
    }
    i += length;
  }
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

std::string_view TypeName(internal::Type type) {
  switch (type) {
    case internal::Type::kCounter:
      return "counter";
    case internal::Type::kGauge:
      return "gauge";
    case internal::Type::kHistogram:
      return "histogram";
  }
  std::abort();  // unreachable: the switch covers every enumerator
}

}  // namespace

namespace internal {

// Writes the samples of one child: its name, labels and values, one line each.
class SampleWriter {
 public:
  SampleWriter(std::string& out, std::string_view name, const std::vector<std::string>& label_names,
               const std::vector<std::string>& label_values)
      : out_(out), name_(name), label_names_(label_names), label_values_(label_values) {}

  // Appends `<name><suffix>{<labels>[,le="<le>"]} <value>`.
  void Write(std::string_view suffix, double value, std::optional<double> le = std::nullopt) {
    out_ += name_;
    out_ += suffix;
    if (!label_names_.empty() || le.has_value()) {
      char separator = '{';
      for (size_t i = 0; i < label_names_.size(); ++i) {
        AppendLabel(separator, label_names_[i], label_values_[i]);
        separator = ',';
      }
      if (le.has_value()) {
        std::string bound;
        AppendNumber(bound, *le);
        AppendLabel(separator, "le", bound);
      }
      out_ += '}';
    }
    out_ += ' ';
    AppendNumber(out_, value);
    out_ += '\n';
  }

 private:
  void AppendLabel(char separator, std::string_view name, std::string_view value) {
    out_ += separator;
    out_ += name;
    out_ += "=\"";
    AppendEscaped(out_, value, /*escape_quote=*/true);
    out_ += '"';
  }

  std::string& out_;
  std::string_view name_;
  const std::vector<std::string>& label_names_;
  const std::vector<std::string>& label_values_;
};

FamilyBase::FamilyBase(std::string name, std::string help, Type type,
                       std::vector<std::string> label_names)
    : name_(std::move(name)),
      help_(std::move(help)),
      type_(type),
      label_names_(std::move(label_names)) {}

void FamilyBase::Render(std::string& out) const {
  out += "# HELP ";
  out += name_;
  out += ' ';
  AppendEscaped(out, help_, /*escape_quote=*/false);
  out += "\n# TYPE ";
  out += name_;
  out += ' ';
  out += TypeName(type_);
  out += '\n';
  CollectSamples(out);
}

LabeledFamily::LabeledFamily(std::string name, std::string help, Type type,
                             std::vector<std::string> label_names, ChildFactory new_child)
    : FamilyBase(std::move(name), std::move(help), type, std::move(label_names)),
      new_child_(std::move(new_child)) {}

absl::StatusOr<Metric*> LabeledFamily::AddChild(const std::vector<std::string>& label_values) {
  if (label_values.size() != LabelNames().size()) {
    return absl::InvalidArgumentError(absl::StrCat(Name(), " takes ", LabelNames().size(),
                                                   " label values, got ", label_values.size()));
  }
  for (const std::string& value : label_values) {
    if (!IsValidUtf8(value)) {
      return absl::InvalidArgumentError(
          absl::StrCat(Name(), ": label value is not valid UTF-8: ", absl::CEscape(value)));
    }
  }
  absl::MutexLock lock(&mu_);
  std::unique_ptr<Metric>& child = children_[label_values];
  if (child == nullptr) {
    child = new_child_();
  }
  return child.get();
}

void LabeledFamily::CollectSamples(std::string& out) const {
  absl::MutexLock lock(&mu_);
  for (const auto& [label_values, child] : children_) {
    SampleWriter writer(out, Name(), LabelNames(), label_values);
    child->Collect(writer);
  }
}

}  // namespace internal

namespace {

// A gauge or counter family whose samples a callback computes at scrape time.
class CallbackFamily final : public internal::FamilyBase {
 public:
  CallbackFamily(std::string name, std::string help, internal::Type type,
                 std::vector<std::string> label_names, GaugeCallback callback)
      : FamilyBase(std::move(name), std::move(help), type, std::move(label_names)),
        callback_(std::move(callback)) {}

 private:
  void CollectSamples(std::string& out) const override {
    std::vector<GaugeSample> samples = callback_();
    std::sort(samples.begin(), samples.end(), [](const GaugeSample& a, const GaugeSample& b) {
      return a.label_values < b.label_values;
    });
    for (const GaugeSample& sample : samples) {
      if (sample.label_values.size() != LabelNames().size()) {
        // The callback is Berry's own code, and a malformed line would make every scrape fail.
        std::fprintf(stderr, "metrics: callback for %s returned %zu label values, wants %zu\n",
                     Name().c_str(), sample.label_values.size(), LabelNames().size());
        std::abort();
      }
      internal::SampleWriter(out, Name(), LabelNames(), sample.label_values)
          .Write("", sample.value);
    }
  }

  const GaugeCallback callback_;
};

}  // namespace

std::vector<double> DefaultLatencyBuckets() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
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

void internal::SingleValueMetric::Collect(SampleWriter& writer) const { writer.Write("", Value()); }

Histogram::Histogram(std::shared_ptr<const std::vector<double>> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_->size() + 1) {}

void Histogram::Observe(double value) {
  // A NaN compares false with every bound, so it would land in the first bucket; like the Go
  // client, count it in `+Inf`.
  const size_t bucket =
      std::isnan(value)
          ? bounds_->size()
          : std::lower_bound(bounds_->begin(), bounds_->end(), value) - bounds_->begin();
  counts_[bucket].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

uint64_t Histogram::Count() const {
  uint64_t count = 0;
  for (const std::atomic<uint64_t>& bucket : counts_) {
    count += bucket.load(std::memory_order_relaxed);
  }
  return count;
}

void Histogram::Collect(internal::SampleWriter& writer) const {
  // `_count` is the running total rather than a separate atomic, so it always equals `+Inf`
  // even while observations race with the scrape.
  uint64_t cumulative = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    cumulative += counts_[i].load(std::memory_order_relaxed);
    writer.Write("_bucket", static_cast<double>(cumulative),
                 i < bounds_->size() ? (*bounds_)[i] : kInf);
  }
  writer.Write("_sum", Sum());
  writer.Write("_count", static_cast<double>(cumulative));
}

template <typename T>
absl::StatusOr<Family<T>*> Registry::AddFamily(std::string_view name, std::string_view help,
                                               std::vector<std::string> label_names,
                                               internal::Type type,
                                               internal::LabeledFamily::ChildFactory new_child) {
  absl::StatusOr<internal::FamilyBase*> family = Register(std::make_unique<Family<T>>(
      std::string(name), std::string(help), type, std::move(label_names), std::move(new_child)));
  if (!family.ok()) {
    return family.status();
  }
  return static_cast<Family<T>*>(*family);
}

absl::StatusOr<Family<Counter>*> Registry::AddCounter(std::string_view name, std::string_view help,
                                                      std::vector<std::string> label_names) {
  return AddFamily<Counter>(name, help, std::move(label_names), internal::Type::kCounter,
                            [] { return std::make_unique<Counter>(); });
}

absl::StatusOr<Family<Gauge>*> Registry::AddGauge(std::string_view name, std::string_view help,
                                                  std::vector<std::string> label_names) {
  return AddFamily<Gauge>(name, help, std::move(label_names), internal::Type::kGauge,
                          [] { return std::make_unique<Gauge>(); });
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
  auto shared_bounds = std::make_shared<const std::vector<double>>(std::move(bounds));
  return AddFamily<Histogram>(
      name, help, std::move(label_names), internal::Type::kHistogram,
      [shared_bounds] { return std::make_unique<Histogram>(shared_bounds); });
}

absl::Status Registry::AddCallbackGauge(std::string_view name, std::string_view help,
                                        std::vector<std::string> label_names,
                                        GaugeCallback callback) {
  return Register(std::make_unique<CallbackFamily>(std::string(name), std::string(help),
                                                   internal::Type::kGauge, std::move(label_names),
                                                   std::move(callback)))
      .status();
}

absl::Status Registry::AddCallbackCounter(std::string_view name, std::string_view help,
                                          std::vector<std::string> label_names,
                                          GaugeCallback callback) {
  return Register(std::make_unique<CallbackFamily>(std::string(name), std::string(help),
                                                   internal::Type::kCounter, std::move(label_names),
                                                   std::move(callback)))
      .status();
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

absl::StatusOr<internal::FamilyBase*> Registry::Register(
    std::unique_ptr<internal::FamilyBase> family) {
  const std::string& name = family->Name();
  if (!IsValidName(name, /*allow_colon=*/true)) {
    return absl::InvalidArgumentError(absl::StrCat("invalid metric name \"", name, "\""));
  }
  if (!IsValidUtf8(family->Help())) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": help text is not valid UTF-8"));
  }
  std::set<std::string_view> seen;
  for (const std::string& label : family->LabelNames()) {
    if (!IsValidName(label, /*allow_colon=*/false) || absl::StartsWith(label, "__")) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": invalid label name \"", label, "\""));
    }
    if (label == "le" && family->IsHistogram()) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": label \"le\" is reserved"));
    }
    if (!seen.insert(label).second) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": duplicate label \"", label, "\""));
    }
  }
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = families_.try_emplace(name);
  if (!inserted) {
    return absl::AlreadyExistsError(absl::StrCat("metric ", name, " is already registered"));
  }
  it->second = std::move(family);
  return it->second.get();
}

std::string Registry::Render() const {
  std::string out;
  absl::MutexLock lock(&mu_);
  for (const auto& [name, family] : families_) {
    family->Render(out);
  }
  return out;
}

}  // namespace berry::metrics
