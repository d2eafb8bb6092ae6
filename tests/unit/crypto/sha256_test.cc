#include "common/crypto/sha256.h"

#include <gtest/gtest.h>

namespace berry::crypto::sha256_test {
namespace {

TEST(Sha256, MatchesTheFips180TestVectorForAbc) {
  EXPECT_EQ(HexEncode(Sha256Bytes("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256, DigestOfTheEmptyStringIsTheKnownValue) {
  EXPECT_EQ(HexEncode(Sha256Bytes("")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Sha256, ArrayAndByteFormsAgree) {
  const Sha256Digest digest = Sha256("berry");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(digest.data()), digest.size()),
            Sha256Bytes("berry"));
}

TEST(ConstantTimeEquals, EqualBytesCompareEqual) {
  EXPECT_TRUE(ConstantTimeEquals(Sha256Bytes("token"), Sha256Bytes("token")));
}

TEST(ConstantTimeEquals, OneDifferentByteCompareUnequal) {
  std::string a = Sha256Bytes("token");
  std::string b = a;
  b[31] = static_cast<char>(b[31] ^ 1);
  EXPECT_FALSE(ConstantTimeEquals(a, b));
}

TEST(ConstantTimeEquals, DifferentLengthsCompareUnequal) {
  EXPECT_FALSE(ConstantTimeEquals("abc", "abcd"));
}

TEST(HexEncode, EncodesHighBytesLowerCase) { EXPECT_EQ(HexEncode(std::string_view("\x00\xff\x10", 3)), "00ff10"); }

}  // namespace
}  // namespace berry::crypto::sha256_test
