package embraft

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"testing"
)

// groupFrame encodes a group frame of messages by hand, as WIRE.md lays
// it out.
func groupFrame(groups []uint64, msgs [][]byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(msgs)))
	for i, m := range msgs {
		b = binary.LittleEndian.AppendUint64(b, groups[i])
		b = binary.LittleEndian.AppendUint32(b, uint32(len(m)))
		b = append(b, m...)
	}
	return b
}

func TestSplitGroupFrame(t *testing.T) {
	// The worked example of WIRE.md: 2 messages, 33 bytes.
	example := groupFrame([]uint64{7, 9}, [][]byte{{1, 2, 3}, {4, 5}})
	if got := hex.EncodeToString(example); got != "02000000"+"0700000000000000"+"03000000"+"010203"+"0900000000000000"+"02000000"+"0405" {
		t.Fatalf("example frame %s", got)
	}
	if got, dropped := splitGroupFrame(example, 64); len(got) != 1 || !bytes.Equal(got[0], example) || dropped != 0 {
		t.Fatalf("a small frame was cut: %x", got)
	}
	// At 20 bytes a frame holds one of these messages.
	got, dropped := splitGroupFrame(example, 20)
	want := [][]byte{groupFrame([]uint64{7}, [][]byte{{1, 2, 3}}), groupFrame([]uint64{9}, [][]byte{{4, 5}})}
	if dropped != 0 || len(got) != 2 || !bytes.Equal(got[0], want[0]) || !bytes.Equal(got[1], want[1]) {
		t.Fatalf("split into %x, dropped %d", got, dropped)
	}
	// Several small messages share a frame; one too large for any frame
	// is left out, the order of the others kept.
	msgs := [][]byte{{1}, {2}, make([]byte, 40), {3}, {4}}
	groups := []uint64{1, 2, 3, 4, 5}
	got, dropped = splitGroupFrame(groupFrame(groups, msgs), 4+2*13)
	want = [][]byte{groupFrame(groups[:2], msgs[:2]), groupFrame(groups[3:], msgs[3:])}
	if dropped != 1 || len(got) != 2 || !bytes.Equal(got[0], want[0]) || !bytes.Equal(got[1], want[1]) {
		t.Fatalf("split into %x, dropped %d", got, dropped)
	}
	// What does not parse goes out whole, for the receiver to refuse.
	bad := append(groupFrame([]uint64{1}, [][]byte{make([]byte, 30)}), 0)
	if got, _ := splitGroupFrame(bad, 20); len(got) != 1 || !bytes.Equal(got[0], bad) {
		t.Fatalf("garbage was cut: %x", got)
	}
}
