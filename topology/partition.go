package topology

import (
	"hash"
	"hash/fnv"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Hasher is the key hasher Goka uses for processors, views and emitters:
// FNV-1a 32, reduced to a partition the Sarama way (see PartitionFor).
func Hasher() func() hash.Hash32 {
	return func() hash.Hash32 { return fnv.New32a() }
}

// fnv32a hashes b the way Hasher does, without allocating a hash.Hash32.
func fnv32a(b []byte) uint32 {
	const (
		offset32 = 2166136261
		prime32  = 16777619
	)
	h := uint32(offset32)
	for _, c := range b {
		h ^= uint32(c)
		h *= prime32
	}
	return h
}

// Partitioner is the franz-go partitioner that puts a key where Goka and
// Sarama look for it. Any other hasher (franz-go's default is murmur2) would
// scatter an order's records and state over different partitions, and views
// would read the wrong one.
func Partitioner() kgo.Partitioner {
	return kgo.StickyKeyPartitioner(kgo.SaramaCompatHasher(fnv32a))
}

// PartitionFor returns the partition of key among n partitions, exactly as
// Sarama's hash partitioner and Goka's views compute it.
func PartitionFor(key []byte, n int32) int32 {
	p := int32(fnv32a(key)) % n
	if p < 0 {
		p = -p
	}
	return p
}
