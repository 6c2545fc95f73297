package embraft

import "encoding/binary"

// Group frame layout (docs/WIRE.md, "Group frames"): a u32 message count,
// then per message a u64 group id, a u32 length and the message.
const (
	groupFrameCountSize  = 4
	groupFrameHeaderSize = 12
)

// splitGroupFrame cuts a group frame the library built into group frames
// of at most limit bytes each, messages in order, because a stream
// frame's payload may not exceed 64 MiB and one poll of many groups can
// produce more for one peer. A message that cannot fit in any frame is
// left out and counted in dropped (Raft retransmits, and the library's
// size bounds keep real messages far smaller). A frame that does not
// parse is returned whole: the receiver refuses it.
func splitGroupFrame(frame []byte, limit int) (frames [][]byte, dropped int) {
	if len(frame) <= limit || len(frame) < groupFrameCountSize {
		return [][]byte{frame}, 0
	}
	count := binary.LittleEndian.Uint32(frame)
	var cur []byte
	n := uint32(0)
	flush := func() {
		if n > 0 {
			binary.LittleEndian.PutUint32(cur, n)
			frames = append(frames, cur)
		}
		cur, n = nil, 0
	}
	at := groupFrameCountSize
	for i := uint32(0); i < count; i++ {
		if len(frame)-at < groupFrameHeaderSize {
			return [][]byte{frame}, 0
		}
		size := int(binary.LittleEndian.Uint32(frame[at+8:]))
		if len(frame)-at-groupFrameHeaderSize < size {
			return [][]byte{frame}, 0
		}
		msg := frame[at : at+groupFrameHeaderSize+size]
		at += len(msg)
		if groupFrameCountSize+len(msg) > limit {
			dropped++
			continue
		}
		if len(cur)+len(msg) > limit {
			flush()
		}
		if cur == nil {
			rest := len(frame) - at + len(msg)
			cur = make([]byte, groupFrameCountSize, min(limit, groupFrameCountSize+rest))
		}
		cur = append(cur, msg...)
		n++
	}
	if at != len(frame) {
		return [][]byte{frame}, 0
	}
	flush()
	return frames, dropped
}
