// Package ziptest builds zips for tests of the zip limits: many tiny
// entries, with an end record that tells the truth or lies about them.
package ziptest

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// ManyEntries builds a zip of n empty STORED files. declared is the entry
// count its end-of-central-directory record states (n normally; less to
// lie); a count that does not fit 16 bits goes in a zip64 record.
func ManyEntries(n int, declared uint64) []byte {
	var b bytes.Buffer
	le := func(v any) { _ = binary.Write(&b, binary.LittleEndian, v) }
	offsets := make([]uint32, n)
	name := func(i int) string { return fmt.Sprintf("m%07d.lua", i) }
	for i := 0; i < n; i++ {
		offsets[i] = uint32(b.Len())
		nm := name(i)
		le(uint32(0x04034b50))
		le([]uint16{20, 0, 0, 0, 0x21}) // version, flags, STORED, time, date
		le([]uint32{0, 0, 0})           // crc, sizes
		le([]uint16{uint16(len(nm)), 0})
		b.WriteString(nm)
	}
	cdStart := b.Len()
	for i := 0; i < n; i++ {
		nm := name(i)
		le(uint32(0x02014b50))
		le([]uint16{20, 20, 0, 0, 0, 0x21})
		le([]uint32{0, 0, 0})
		le([]uint16{uint16(len(nm)), 0, 0, 0, 0})
		le([]uint32{0, offsets[i]})
		b.WriteString(nm)
	}
	cdSize := b.Len() - cdStart
	count16 := uint16(declared)
	if declared >= 0xffff {
		eocd64 := b.Len()
		le(uint32(0x06064b50))
		le(uint64(44))
		le([]uint16{45, 45})
		le([]uint32{0, 0})
		le([]uint64{declared, declared, uint64(cdSize), uint64(cdStart)})
		le(uint32(0x07064b50))
		le(uint32(0))
		le(uint64(eocd64))
		le(uint32(1))
		count16 = 0xffff
	}
	le(uint32(0x06054b50))
	le([]uint16{0, 0, count16, count16})
	le([]uint32{uint32(cdSize), uint32(cdStart)})
	le(uint16(0))
	return b.Bytes()
}
