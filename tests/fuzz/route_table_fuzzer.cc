// A route table as berry-proxy reads it back from --state-dir at start
// (data-plane/managed/control_plane_client.h, LoadPersistedTable, then RouteStore::Apply), from
// arbitrary bytes. Most byte strings fail the table's content hash; so the same bytes are also
// parsed as a table, given their correct hash, and applied, as a damaged-but-consistent file
// (or a control plane sending nonsense) would be.
//
// Properties: loading never crashes or throws; a table that loads has a matching version; a
// table the store accepts is the one it serves.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "berry/v1/discovery.pb.h"
#include "common/route_table/compile.h"
#include "data-plane/managed/control_plane_client.h"
#include "data-plane/proxy/route_store.h"
#include "tests/fuzz/byte_source.h"

namespace {

const std::string& StateDir() {
  static const std::string dir = [] {
    char path[] = "/tmp/berry-fuzz-state-XXXXXX";
    FUZZ_CHECK(::mkdtemp(path) != nullptr);
    return std::string(path);
  }();
  return dir;
}

void Apply(berry::v1::RouteTable table) {
  berry::proxy::RouteStore store;
  const std::string version = table.version_info();
  if (store.Apply(std::move(table)).ok()) {
    FUZZ_CHECK(store.Current() != nullptr && store.Current()->version() == version);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  {
    const std::string path = StateDir() + "/route_table.pb";
    FILE* file = std::fopen(path.c_str(), "wb");
    FUZZ_CHECK(file != nullptr);
    FUZZ_CHECK(std::fwrite(bytes.data(), 1, bytes.size(), file) == bytes.size());
    std::fclose(file);
  }
  auto loaded = berry::managed::LoadPersistedTable(StateDir());
  if (loaded.ok()) {
    FUZZ_CHECK(berry::route_table::ComputeVersion(*loaded) == loaded->version_info());
    Apply(*std::move(loaded));
  }
  berry::v1::RouteTable table;
  if (table.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    berry::route_table::StampVersion(table);
    Apply(std::move(table));
  }
  return 0;
}
