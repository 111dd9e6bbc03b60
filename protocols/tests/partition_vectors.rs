//! Test vectors of the key hash. These values are part of the data placement
//! contract: if one changes, keys move between partitions.

use kv_protocols::partition::{key_hash, partition_of};

/// `(key, FNV-1a 64 of the key, key_hash(key))`. The middle column is the plain
/// FNV-1a value, which anyone can check against a reference implementation.
const VECTORS: &[(&str, u64, u64)] = &[
    ("", 0xCBF2_9CE4_8422_2325, 0xF52A_15E9_A9B5_E89B),
    ("a", 0xAF63_DC4C_8601_EC8C, 0x02C0_BDBF_4814_20F8),
    ("foo", 0xDCB2_7518_FED9_D577, 0x6C2F_E770_3E1B_0BCA),
    ("test0", 0x1F85_7D48_4DFD_34AF, 0x3A50_647D_6F47_3794),
    ("put42", 0xA428_E30C_DBDE_2754, 0x385F_20D4_FFCA_3478),
    ("clé-ключ-鍵", 0x218F_3504_C618_06B5, 0xA6AB_5313_FF95_3938),
];

#[test]
fn key_hash_matches_the_checked_in_vectors() {
    for &(key, _, expected) in VECTORS {
        assert_eq!(key_hash(key.as_bytes()), expected, "key {key:?}");
    }
}

#[test]
fn key_hash_is_fnv1a_followed_by_mix64() {
    for &(key, fnv, expected) in VECTORS {
        assert_eq!(kv_protocols::rng::mix64(fnv), expected, "key {key:?}");
    }
}

#[test]
fn vector_keys_land_in_the_expected_partitions() {
    let expected_of_4 = [3, 0, 1, 0, 0, 2];
    let expected_of_3 = [2, 0, 1, 0, 0, 1];
    for (i, &(key, _, h)) in VECTORS.iter().enumerate() {
        assert_eq!(partition_of(h, 4), expected_of_4[i], "key {key:?}");
        assert_eq!(partition_of(h, 3), expected_of_3[i], "key {key:?}");
        assert_eq!(partition_of(h, 1), 0, "key {key:?}");
    }
}
