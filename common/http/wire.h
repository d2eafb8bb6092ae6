// HTTP/1.1 message heads written straight into one reusable string, for the relay's hot path.
//
// Beast's serializer walks a message as a concatenation of many small buffers; for a proxy that
// writes two heads per request this costed more user-space CPU than everything else the proxy
// does (bench/README.md, "Profile"). Here a head is appended into a string the caller keeps
// between requests, and the head and the body go out in one gather write.
//
// Field names and values are written as given: the caller passes fields that Beast's parser
// accepted or that config validation vetted, which cannot contain CR or LF.
#pragma once

#include <array>
#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/message.hpp>
#include <cstddef>
#include <initializer_list>
#include <string>
#include <string_view>

namespace berry::wire {

namespace http = boost::beast::http;

// "HTTP/1.1 200 OK\r\n"
void AppendStatusLine(std::string& out, unsigned status);
// "POST /v1/chat/completions HTTP/1.1\r\n"; the target is given in pieces (base path, path,
// query) so that nobody has to concatenate it first.
void AppendRequestLine(std::string& out, std::string_view method,
                       std::initializer_list<std::string_view> target);
// "name: value\r\n"
void AppendField(std::string& out, std::string_view name, std::string_view value);
// "Content-Length: N\r\n"
void AppendContentLength(std::string& out, size_t length);
// Every field of `fields` except the framing ones this module writes itself (Connection,
// Content-Length, Transfer-Encoding) and any whose name equals `skip_name` (case-insensitive;
// empty = none).
void AppendFieldsExceptFraming(std::string& out, const http::fields& fields,
                               std::string_view skip_name = {});
// A whole request head: request line, every field of `request` as it is, the empty line. For
// requests built as Beast messages off the hot path (health checks).
void AppendRequestHead(std::string& out, const http::request_header<>& request);
// 1xx, 204 and 304 responses carry no body and no Content-Length.
bool StatusHasNoBody(unsigned status);

// The size line of a chunk of `size` bytes ("1f4\r\n"), written into `storage`.
using ChunkLineStorage = std::array<char, 24>;
std::string_view ChunkSizeLine(size_t size, ChunkLineStorage& storage);

inline constexpr std::string_view kCrLf = "\r\n";
inline constexpr std::string_view kLastChunk = "0\r\n\r\n";

}  // namespace berry::wire
