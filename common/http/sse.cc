#include "common/http/sse.h"

#include <algorithm>
#include <cstring>

namespace berry::sse {
namespace {

constexpr char kBom[] = "\xEF\xBB\xBF";
constexpr uint8_t kBomDecided = 3;
constexpr size_t kMinGrowth = 256;

}  // namespace

SseEventSplitter::SseEventSplitter(size_t max_event_bytes) : max_event_bytes_(max_event_bytes) {}

void SseEventSplitter::Feed(std::string_view bytes,
                            absl::FunctionRef<void(std::string_view data)> on_data) {
  size_t i = 0;
  while (bom_matched_ < kBomDecided && i < bytes.size()) {
    if (bytes[i] == kBom[bom_matched_]) {
      ++bom_matched_;
      ++i;
      continue;
    }
    // Not a BOM after all: what matched so far is content.
    const size_t matched = bom_matched_;
    bom_matched_ = kBomDecided;
    ProcessBytes(std::string_view(kBom, matched), on_data);
  }
  ProcessBytes(bytes.substr(i), on_data);
}

bool SseEventSplitter::AtEventBoundary() const {
  return partial_len_ == 0 && !in_event_ && (bom_matched_ == 0 || bom_matched_ == kBomDecided);
}

void SseEventSplitter::ProcessBytes(std::string_view bytes,
                                    absl::FunctionRef<void(std::string_view)> on_data) {
  const char* p = bytes.data();
  const char* const end = p + bytes.size();
  if (after_cr_ && p != end) {
    after_cr_ = false;
    if (*p == '\n') {
      ++p;
    }
  }
  while (p != end) {
    const auto remain = static_cast<size_t>(end - p);
    const auto* lf = static_cast<const char*>(std::memchr(p, '\n', remain));
    const size_t before_lf = lf != nullptr ? static_cast<size_t>(lf - p) : remain;
    const auto* cr = static_cast<const char*>(std::memchr(p, '\r', before_lf));
    const char* eol = cr != nullptr ? cr : lf;
    if (eol == nullptr) {
      AppendPartialLine(std::string_view(p, remain));
      Materialize();
      return;
    }
    const std::string_view tail(p, static_cast<size_t>(eol - p));
    if (partial_len_ == 0) {
      CompleteLine(tail, /*line_is_buffered=*/false, on_data);
    } else {
      AppendPartialLine(tail);
      CompleteLine(std::string_view(buf_.get() + data_len_, size_ - data_len_),
                   /*line_is_buffered=*/true, on_data);
    }
    p = eol + 1;
    if (*eol == '\r') {
      if (p == end) {
        after_cr_ = true;
      } else if (*p == '\n') {
        ++p;
      }
    }
  }
  Materialize();
}

void SseEventSplitter::Materialize() {
  if (!holding_) {
    return;
  }
  holding_ = false;
  Append(held_);
  Append("\n");
  data_len_ = size_;
}

void SseEventSplitter::AppendPartialLine(std::string_view part) {
  if (!skipping_ && event_bytes_ + partial_len_ + part.size() > max_event_bytes_) {
    StartSkipping();
  }
  partial_len_ += part.size();
  if (!skipping_) {
    Materialize();
    Append(part);
  }
}

void SseEventSplitter::CompleteLine(std::string_view line, bool line_is_buffered,
                                    absl::FunctionRef<void(std::string_view)> on_data) {
  // While skipping nothing is buffered, so only the length tells a blank line.
  const size_t length = partial_len_ != 0 ? partial_len_ : line.size();
  partial_len_ = 0;
  if (length == 0) {
    EndEvent(on_data);
    return;
  }
  in_event_ = true;
  if (skipping_) {
    return;
  }
  if (event_bytes_ + length > max_event_bytes_) {
    StartSkipping();
    return;
  }
  event_bytes_ += length;
  std::string_view field = line;
  std::string_view value;
  if (const size_t colon = line.find(':'); colon != std::string_view::npos) {
    field = line.substr(0, colon);
    value = line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') {
      value.remove_prefix(1);
    }
  }
  if (field != "data") {  // comments (empty field name) and fields we do not need
    size_ = data_len_;
    return;
  }
  if (!line_is_buffered && data_len_ == 0 && !holding_ && size_ == 0) {
    holding_ = true;  // the event's first data line, left where it is for now
    held_ = value;
    return;
  }
  Materialize();
  if (line_is_buffered) {
    // The value already sits in the buffer after the field name: slide it down onto the data.
    if (!value.empty()) {
      std::memmove(buf_.get() + data_len_, value.data(), value.size());
    }
    size_ = data_len_ + value.size();
  } else {
    Append(value);
  }
  // Room is guaranteed: the newline replaces at least the field name "data".
  Append("\n");
  data_len_ = size_;
}

void SseEventSplitter::EndEvent(absl::FunctionRef<void(std::string_view)> on_data) {
  if (skipping_) {
    skipping_ = false;
  } else if (holding_) {
    holding_ = false;
    ++events_;
    if (held_ == "[DONE]") {
      done_ = true;
    }
    on_data(held_);
  } else if (data_len_ != 0) {
    const std::string_view payload(buf_.get(), data_len_ - 1);  // without the final '\n'
    ++events_;
    if (payload == "[DONE]") {
      done_ = true;
    }
    on_data(payload);
  }
  size_ = 0;
  data_len_ = 0;
  event_bytes_ = 0;
  in_event_ = false;
}

void SseEventSplitter::StartSkipping() {
  skipping_ = true;
  holding_ = false;
  ++skipped_events_;
  size_ = 0;
  data_len_ = 0;
  event_bytes_ = 0;
}

void SseEventSplitter::Append(std::string_view bytes) {
  if (bytes.empty()) {
    return;  // an empty view may have a null data(), which memcpy must not see
  }
  const size_t needed = size_ + bytes.size();
  if (needed > capacity_) {
    // Callers keep needed <= max_event_bytes_, so the buffer never outgrows the bound.
    const size_t new_capacity =
        std::min(max_event_bytes_, std::max({needed, capacity_ * 2, kMinGrowth}));
    auto grown = std::make_unique_for_overwrite<char[]>(std::max(new_capacity, needed));
    if (size_ != 0) {
      std::memcpy(grown.get(), buf_.get(), size_);
    }
    buf_ = std::move(grown);
    capacity_ = std::max(new_capacity, needed);
  }
  std::memcpy(buf_.get() + size_, bytes.data(), bytes.size());
  size_ = needed;
}

void AppendDataEvent(std::string_view data, std::string& out) {
  while (true) {
    const size_t end = data.find('\n');
    out.append("data: ");
    out.append(data.substr(0, end));
    out.push_back('\n');
    if (end == std::string_view::npos) {
      break;
    }
    data.remove_prefix(end + 1);
  }
  out.push_back('\n');
}

}  // namespace berry::sse
