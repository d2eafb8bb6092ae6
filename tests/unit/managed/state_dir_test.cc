// --state-dir: the last good route table, kept so a proxy restarted without its control plane
// still serves. The file holds provider keys (mode 0600) and is replaced atomically.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "data-plane/managed/control_plane_client.h"
#include "google/protobuf/util/message_differencer.h"
#include "tests/unit/managed/test_tables.h"

namespace berry::managed::state_dir_test {
namespace {

namespace v1 = berry::v1;
using google::protobuf::util::MessageDifferencer;
using testing::Damaged;
using ::testing::HasSubstr;
using testing::TableOn;

// A fresh directory under the test's temp dir, removed afterwards.
class StateDir : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "berry-state-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    file_ = dir_ + "/route_table.pb";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  void WriteFile(const std::string& path, const std::string& bytes, mode_t mode = 0600) {
    {
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      out << bytes;
    }
    ASSERT_EQ(::chmod(path.c_str(), mode), 0);
  }
  static std::string ReadAll(std::istream& in) {
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }
  static mode_t ModeOf(const std::string& path) {
    struct stat info {};
    EXPECT_EQ(::stat(path.c_str(), &info), 0) << path;
    return info.st_mode & 07777;
  }

  std::string dir_;
  std::string file_;
  const v1::RouteTable table_ = TableOn("a.example", {"chat"});
};

TEST_F(StateDir, PersistedTableLoadsBackUnchanged) {
  ASSERT_TRUE(PersistTable(dir_, table_).ok());
  auto loaded = LoadPersistedTable(dir_);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(MessageDifferencer::Equals(*loaded, table_));
  EXPECT_EQ(loaded->version_info(), table_.version_info());
}

TEST_F(StateDir, PersistedFileIsReadableAndWritableOnlyByItsOwner) {
  ASSERT_TRUE(PersistTable(dir_, table_).ok());
  EXPECT_EQ(ModeOf(file_), 0600u);
}

// An existing file (or a temp file a crash left behind) with wider permissions does not pass
// them on to the file that holds the keys.
TEST_F(StateDir, ReplacingFilesWithWiderPermissionsStillLeavesMode0600) {
  WriteFile(file_, "old", 0644);
  WriteFile(file_ + ".tmp", "left over", 0666);
  ASSERT_TRUE(PersistTable(dir_, table_).ok());
  EXPECT_EQ(ModeOf(file_), 0600u);
}

// The new table is written to a temp file and renamed over the old one: a reader (a proxy
// starting up) sees either the whole old table or the whole new one, never a mix.
TEST_F(StateDir, ReplacesTheFileAtomicallyByRenamingACompleteTempFile) {
  ASSERT_TRUE(PersistTable(dir_, table_).ok());
  std::ifstream opened_before(file_, std::ios::binary);
  ASSERT_TRUE(opened_before);
  struct stat before {};
  ASSERT_EQ(::stat(file_.c_str(), &before), 0);

  const v1::RouteTable next = TableOn("a.example", {"chat", "embed"});
  ASSERT_TRUE(PersistTable(dir_, next).ok());

  struct stat after {};
  ASSERT_EQ(::stat(file_.c_str(), &after), 0);
  EXPECT_NE(after.st_ino, before.st_ino) << "rewritten in place, not replaced";
  v1::RouteTable old_contents;
  ASSERT_TRUE(old_contents.ParseFromString(ReadAll(opened_before)));
  EXPECT_TRUE(MessageDifferencer::Equals(old_contents, table_));
  auto loaded = LoadPersistedTable(dir_);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(MessageDifferencer::Equals(*loaded, next));
  EXPECT_FALSE(std::filesystem::exists(file_ + ".tmp")) << "the temp file was left behind";
}

// A crash between writing the temp file and renaming it leaves a partial temp file: the last
// complete table is still the one loaded.
TEST_F(StateDir, APartialTempFileFromACrashIsIgnored) {
  ASSERT_TRUE(PersistTable(dir_, table_).ok());
  const std::string bytes = TableOn("a.example", {"chat", "embed"}).SerializeAsString();
  WriteFile(file_ + ".tmp", bytes.substr(0, bytes.size() / 2));
  auto loaded = LoadPersistedTable(dir_);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->version_info(), table_.version_info());
}

TEST_F(StateDir, MissingFileIsNotFound) {
  auto loaded = LoadPersistedTable(dir_);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound) << loaded.status();
}

TEST_F(StateDir, GarbageFileIsDataLossNamingThePath) {
  WriteFile(file_, std::string("\xff\xff\xff\xff not a protobuf", 20));
  auto loaded = LoadPersistedTable(dir_);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << loaded.status();
  EXPECT_THAT(loaded.status().message(), HasSubstr(file_));
}

// Cut at any length — mid-field or on a field boundary, where the prefix still parses — a
// truncated file is refused.
TEST_F(StateDir, TruncatedFileIsDataLossNamingThePath) {
  const std::string bytes = table_.SerializeAsString();
  for (size_t length = 0; length < bytes.size(); length += 7) {
    SCOPED_TRACE(length);
    WriteFile(file_, bytes.substr(0, length));
    auto loaded = LoadPersistedTable(dir_);
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << loaded.status();
    EXPECT_THAT(loaded.status().message(), HasSubstr(file_));
  }
}

TEST_F(StateDir, TableWhoseVersionDoesNotMatchItsContentIsDataLossSayingDamaged) {
  WriteFile(file_, Damaged(table_).SerializeAsString());
  auto loaded = LoadPersistedTable(dir_);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << loaded.status();
  EXPECT_THAT(loaded.status().message(), HasSubstr("damaged"));
  EXPECT_THAT(loaded.status().message(), HasSubstr(file_));
}

TEST_F(StateDir, DirectoryThatDoesNotExistIsAnErrorNamingTheFileAndTheReason) {
  const std::string missing = dir_ + "/missing";
  const absl::Status status = PersistTable(missing, table_);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(status.message(), HasSubstr(missing + "/route_table.pb"));
  EXPECT_THAT(status.message(), HasSubstr("No such file or directory"));
}

// Tests may run as root, for whom permission bits do not stop a write: a path through a regular
// file cannot be written by anyone.
TEST_F(StateDir, PathThroughARegularFileIsAnErrorNamingTheFileAndTheReason) {
  WriteFile(dir_ + "/not-a-dir", "x");
  const std::string state_dir = dir_ + "/not-a-dir";
  const absl::Status status = PersistTable(state_dir, table_);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(status.message(), HasSubstr(state_dir + "/route_table.pb"));
  EXPECT_THAT(status.message(), HasSubstr("Not a directory"));
}

}  // namespace
// PrepareStateDir, at start: a directory that does not exist yet is made, private.
TEST_F(StateDir, MissingDirectoryIsCreatedPrivate) {
  const std::string missing = dir_ + "/not/there/yet";
  ASSERT_TRUE(PrepareStateDir(missing).ok());
  ASSERT_TRUE(std::filesystem::is_directory(missing));
  EXPECT_EQ(ModeOf(missing), 0700u);
  EXPECT_TRUE(PersistTable(missing, table_).ok());
  EXPECT_TRUE(LoadPersistedTable(missing).ok());
}

TEST_F(StateDir, ExistingDirectoryIsKeptAsItIs) {
  ASSERT_EQ(::chmod(dir_.c_str(), 0750), 0);
  ASSERT_TRUE(PersistTable(dir_, table_).ok());
  ASSERT_TRUE(PrepareStateDir(dir_).ok());
  EXPECT_EQ(ModeOf(dir_), 0750u);
  EXPECT_TRUE(LoadPersistedTable(dir_).ok());  // the table is untouched
  // Nothing but the table is left behind (the write probe is removed).
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir_),
                          std::filesystem::directory_iterator()),
            1);
}

TEST_F(StateDir, AFileIsRefused) {
  const std::string file = dir_ + "/plain-file";
  WriteFile(file, "x");
  const absl::Status status = PrepareStateDir(file);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("is not a directory"));
  EXPECT_THAT(status.message(), HasSubstr(file));
}

TEST_F(StateDir, ADirectoryThatCannotBeMadeIsRefused) {
  const std::string file = dir_ + "/plain-file";
  WriteFile(file, "x");
  const absl::Status status = PrepareStateDir(file + "/below");
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("cannot create"));
}

TEST_F(StateDir, AnUnwritableDirectoryIsRefused) {
  // Root writes into any directory whatever its mode; /proc's top level refuses even root.
  const std::string target = ::geteuid() == 0 ? std::string("/proc") : dir_;
  if (::geteuid() != 0) {
    ASSERT_EQ(::chmod(dir_.c_str(), 0500), 0);
  }
  const absl::Status status = PrepareStateDir(target);
  if (::geteuid() != 0) {
    ::chmod(dir_.c_str(), 0700);
  }
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("cannot write to " + target));
}

}  // namespace berry::managed::state_dir_test
