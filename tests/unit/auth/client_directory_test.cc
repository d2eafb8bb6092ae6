// ClientDirectory: authentication by token digest, the open gateway, model permissions.
#include "data-plane/auth/client_directory.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/crypto/sha256.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace berry::auth::client_directory_test {
namespace {

namespace v1 = berry::v1;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kAliceToken[] = "berry-alice-0123456789abcdef";
constexpr char kBobToken[] = "berry-bob-fedcba9876543210";

v1::ClientKey* AddKey(v1::RouteTable& table, const std::string& id, const std::string& token,
                      std::vector<std::string> allowed_models = {}, bool enabled = true) {
  v1::ClientKey* key = table.add_client_keys();
  key->set_id(id);
  key->set_name("User " + id);
  key->set_token_sha256(crypto::Sha256Bytes(token));
  for (std::string& model : allowed_models) {
    key->add_allowed_models(std::move(model));
  }
  key->set_enabled(enabled);
  return key;
}

// alice: allowed gpt-4o only, tagged premium; bob: all models; carol: disabled.
v1::RouteTable TwoUsersAndADisabledOne() {
  v1::RouteTable table;
  v1::ClientKey* alice = AddKey(table, "alice", kAliceToken, {"gpt-4o"});
  alice->add_tags("premium");
  alice->mutable_rate_limit()->set_requests_per_minute(60);
  AddKey(table, "bob", kBobToken);
  AddKey(table, "carol", "berry-carol-token", {}, /*enabled=*/false);
  return table;
}

std::shared_ptr<const ClientDirectory> Directory(const v1::RouteTable& table) {
  absl::StatusOr<std::shared_ptr<const ClientDirectory>> directory = ClientDirectory::Create(table);
  EXPECT_TRUE(directory.ok()) << directory.status();
  return directory.ok() ? *directory : nullptr;
}

// Checks the status is Unauthenticated with `message` and leaks no part of `token`.
void ExpectRefused(const absl::StatusOr<const Client*>& result, const std::string& message,
                   const std::string& token) {
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(std::string(result.status().message()), message);
  if (token.size() >= 6) {
    // No six-byte window of the token appears in the message.
    for (size_t i = 0; i + 6 <= token.size(); ++i) {
      EXPECT_THAT(std::string(result.status().message()), Not(HasSubstr(token.substr(i, 6))));
    }
  }
}

TEST(ClientDirectoryTest, ValidKeyAuthenticatesItsClient) {
  const auto directory = Directory(TwoUsersAndADisabledOne());
  const absl::StatusOr<const Client*> client =
      directory->Authenticate(std::string("Bearer ") + kAliceToken);
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_EQ((*client)->id(), "alice");
  EXPECT_EQ((*client)->name(), "User alice");
  EXPECT_EQ((*client)->index(), 0u);
  EXPECT_THAT((*client)->tags(), ElementsAre("premium"));
  EXPECT_EQ((*client)->rate_limit().requests_per_minute(), 60u);
  EXPECT_FALSE((*client)->anonymous());
  EXPECT_FALSE(directory->open());

  const absl::StatusOr<const Client*> bob =
      directory->Authenticate(std::string("Bearer ") + kBobToken);
  ASSERT_TRUE(bob.ok()) << bob.status();
  EXPECT_EQ((*bob)->id(), "bob");
  EXPECT_EQ((*bob)->index(), 1u);
}

TEST(ClientDirectoryTest, MissingHeaderIsUnauthenticated) {
  const auto directory = Directory(TwoUsersAndADisabledOne());
  ExpectRefused(directory->Authenticate(""),
                "missing API key: send Authorization: Bearer <key> or x-api-key: <key>", "");
  ExpectRefused(directory->Authenticate("   "),
                "missing API key: send Authorization: Bearer <key> or x-api-key: <key>", "");
}

TEST(ClientDirectoryTest, BearerWithoutTokenIsMissingKey) {
  const auto directory = Directory(TwoUsersAndADisabledOne());
  ExpectRefused(directory->Authenticate("Bearer "),
                "missing API key: send Authorization: Bearer <key> or x-api-key: <key>", "");
}

TEST(ClientDirectoryTest, MalformedHeaderIsUnauthenticatedWithoutTheToken) {
  const auto directory = Directory(TwoUsersAndADisabledOne());
  const std::string expected = "malformed Authorization header: expected Bearer <key>";
  const std::string token = kAliceToken;
  ExpectRefused(directory->Authenticate(token), expected, token);             // no scheme
  ExpectRefused(directory->Authenticate("Basic " + token), expected, token);  // wrong scheme
  ExpectRefused(directory->Authenticate("Bearer" + token), expected, token);  // no separator
  ExpectRefused(directory->Authenticate("Bearer " + token + " extra"), expected, token);
  ExpectRefused(directory->Authenticate("Bearer " + token.substr(0, 8) + "\x01" + token.substr(8)),
                expected, token);
}

TEST(ClientDirectoryTest, UnknownKeyIsInvalidWithoutTheToken) {
  const auto directory = Directory(TwoUsersAndADisabledOne());
  const std::string token = "berry-mallory-not-a-real-key";
  ExpectRefused(directory->Authenticate("Bearer " + token), "invalid API key", token);
}

TEST(ClientDirectoryTest, DisabledKeyIsRefusedWithoutTheToken) {
  const auto directory = Directory(TwoUsersAndADisabledOne());
  ExpectRefused(directory->Authenticate("Bearer berry-carol-token"), "API key disabled",
                "berry-carol-token");
}

TEST(ClientDirectoryTest, BearerSchemeIsCaseInsensitive) {
  const auto directory = Directory(TwoUsersAndADisabledOne());
  for (const std::string scheme : {"bearer", "BEARER", "BeArEr"}) {
    const absl::StatusOr<const Client*> client =
        directory->Authenticate(scheme + " " + kAliceToken);
    ASSERT_TRUE(client.ok()) << scheme << ": " << client.status();
    EXPECT_EQ((*client)->id(), "alice");
  }
}

TEST(ClientDirectoryTest, SurroundingWhitespaceIsTolerated) {
  const auto directory = Directory(TwoUsersAndADisabledOne());
  const absl::StatusOr<const Client*> client =
      directory->Authenticate(std::string(" \tBearer \t ") + kAliceToken + "  \t");
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_EQ((*client)->id(), "alice");
}

TEST(ClientDirectoryTest, TableWithoutKeysIsAnOpenGatewayServingAnyRequestAnonymously) {
  const auto directory = Directory(v1::RouteTable());
  EXPECT_TRUE(directory->open());
  for (const std::string header : {"", "Bearer whatever", "garbage"}) {
    const absl::StatusOr<const Client*> client = directory->Authenticate(header);
    ASSERT_TRUE(client.ok()) << client.status();
    EXPECT_TRUE((*client)->anonymous());
    EXPECT_TRUE((*client)->enabled());
    EXPECT_TRUE((*client)->MayUse("gpt-4o"));
    EXPECT_TRUE((*client)->tags().empty());
  }
}

TEST(ClientDirectoryTest, EmptyAllowedModelsMayUseEveryModel) {
  const auto directory = Directory(TwoUsersAndADisabledOne());
  const Client* bob = directory->FindById("bob");
  ASSERT_NE(bob, nullptr);
  EXPECT_TRUE(bob->MayUse("gpt-4o"));
  EXPECT_TRUE(bob->MayUse("claude-3"));
  EXPECT_TRUE(bob->MayUse(""));
}

TEST(ClientDirectoryTest, AllowedModelsRestrictWhatTheClientMayUse) {
  const auto directory = Directory(TwoUsersAndADisabledOne());
  const Client* alice = directory->FindById("alice");
  ASSERT_NE(alice, nullptr);
  EXPECT_TRUE(alice->MayUse("gpt-4o"));
  EXPECT_FALSE(alice->MayUse("gpt-4o-mini"));
  EXPECT_FALSE(alice->MayUse("GPT-4O"));  // names are exact
  EXPECT_FALSE(alice->MayUse(""));
}

TEST(ClientDirectoryTest, ClientsAreIndexedInTableOrder) {
  const auto directory = Directory(TwoUsersAndADisabledOne());
  ASSERT_EQ(directory->clients().size(), 3u);
  for (uint32_t i = 0; i < 3; ++i) {
    EXPECT_EQ(directory->clients()[i].index(), i);
  }
  EXPECT_EQ(directory->FindById("carol"), &directory->clients()[2]);
  EXPECT_EQ(directory->FindById("dave"), nullptr);
}

TEST(ClientDirectoryTest, CreateRejectsADigestThatIsNot32Bytes) {
  for (const std::string& digest : {std::string(), std::string(31, 'x'), std::string(33, 'x'),
                                    crypto::HexEncode(crypto::Sha256Bytes("token"))}) {
    v1::RouteTable table;
    AddKey(table, "alice", kAliceToken)->set_token_sha256(digest);
    const auto directory = ClientDirectory::Create(table);
    ASSERT_FALSE(directory.ok()) << digest.size();
    EXPECT_EQ(directory.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(directory.status().message()), HasSubstr("alice"));
  }
}

TEST(ClientDirectoryTest, CreateRejectsTwoKeysWithTheSameToken) {
  v1::RouteTable table;
  AddKey(table, "alice", kAliceToken);
  AddKey(table, "mallory", kAliceToken);
  const auto directory = ClientDirectory::Create(table);
  ASSERT_FALSE(directory.ok());
  EXPECT_EQ(directory.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(directory.status().message()), HasSubstr("alice"));
  EXPECT_THAT(std::string(directory.status().message()), HasSubstr("mallory"));
  EXPECT_THAT(std::string(directory.status().message()), Not(HasSubstr(kAliceToken)));
}

TEST(ClientDirectoryTest, CreateRejectsDuplicateAndEmptyIds) {
  v1::RouteTable duplicate;
  AddKey(duplicate, "alice", kAliceToken);
  AddKey(duplicate, "alice", kBobToken);
  EXPECT_EQ(ClientDirectory::Create(duplicate).status().code(), absl::StatusCode::kInvalidArgument);

  v1::RouteTable empty;
  AddKey(empty, "", kAliceToken);
  EXPECT_EQ(ClientDirectory::Create(empty).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace berry::auth::client_directory_test
