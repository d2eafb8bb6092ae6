#include "common/http/wire.h"

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/status.hpp>
#include <charconv>

namespace berry::wire {

void AppendStatusLine(std::string& out, unsigned status) {
  char digits[8];
  const auto [end, ec] = std::to_chars(digits, digits + sizeof digits, status);
  const auto reason = http::obsolete_reason(static_cast<http::status>(status));
  out.append("HTTP/1.1 ");
  out.append(digits, end);
  out.push_back(' ');
  out.append(reason.data(), reason.size());
  out.append(kCrLf);
}

void AppendRequestLine(std::string& out, std::string_view method,
                       std::initializer_list<std::string_view> target) {
  out.append(method);
  out.push_back(' ');
  for (const std::string_view part : target) {
    out.append(part);
  }
  out.append(" HTTP/1.1\r\n");
}

void AppendField(std::string& out, std::string_view name, std::string_view value) {
  out.append(name);
  out.append(": ");
  out.append(value);
  out.append(kCrLf);
}

void AppendContentLength(std::string& out, size_t length) {
  char digits[24];
  const auto [end, ec] = std::to_chars(digits, digits + sizeof digits, length);
  AppendField(out, "Content-Length", std::string_view(digits, end - digits));
}

void AppendFieldsExceptFraming(std::string& out, const http::fields& fields,
                               std::string_view skip_name) {
  for (const auto& field : fields) {
    switch (field.name()) {
      case http::field::connection:
      case http::field::content_length:
      case http::field::transfer_encoding:
        continue;
      default:
        break;
    }
    const auto name = field.name_string();
    if (!skip_name.empty() && boost::beast::iequals(name, skip_name)) {
      continue;
    }
    const auto value = field.value();
    AppendField(out, std::string_view(name.data(), name.size()),
                std::string_view(value.data(), value.size()));
  }
}

void AppendRequestHead(std::string& out, const http::request_header<>& request) {
  const auto method = request.method_string();
  const auto target = request.target();
  AppendRequestLine(out, std::string_view(method.data(), method.size()),
                    {std::string_view(target.data(), target.size())});
  for (const auto& field : request) {
    const auto name = field.name_string();
    const auto value = field.value();
    AppendField(out, std::string_view(name.data(), name.size()),
                std::string_view(value.data(), value.size()));
  }
  out.append(kCrLf);
}

bool StatusHasNoBody(unsigned status) {
  return (status >= 100 && status < 200) || status == 204 || status == 304;
}

std::string_view ChunkSizeLine(size_t size, ChunkLineStorage& storage) {
  const auto [end, ec] =
      std::to_chars(storage.data(), storage.data() + storage.size() - 2, size, 16);
  end[0] = '\r';
  end[1] = '\n';
  return std::string_view(storage.data(), end + 2 - storage.data());
}

}  // namespace berry::wire
