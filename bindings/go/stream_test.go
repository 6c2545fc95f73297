package embraft

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"io"
	"net"
	"testing"
	"time"
)

// The hello and reply layouts pinned byte for byte against
// docs/WIRE.md, so that this binding interoperates with the others.
func TestHandshakeBytes(t *testing.T) {
	got := hex.EncodeToString(encodeHello(0x0102030405060708, 2, 3, 0))
	want := "454d5246" + "0100" + "0000" + "0807060504030201" + "0200000000000000" + "0300000000000000"
	if got != want {
		t.Fatalf("hello %s, want %s", got, want)
	}
	got = hex.EncodeToString(encodeHello(0x0102030405060708, 2, 3, helloGroupFrames))
	want = "454d5246" + "0100" + "0100" + "0807060504030201" + "0200000000000000" + "0300000000000000"
	if got != want {
		t.Fatalf("group hello %s, want %s", got, want)
	}
	got = hex.EncodeToString(encodeReply(replyBadCluster, 9))
	want = "454d5246" + "0100" + "0200" + "0900000000000000"
	if got != want {
		t.Fatalf("reply %s, want %s", got, want)
	}
}

type recordingHost struct{ msgs chan []byte }

func (h recordingHost) Step(msg []byte) error      { h.msgs <- msg; return nil }
func (h recordingHost) ReportUnreachable(_ uint64) {}

// A raw client speaking WIRE.md by hand: refused for a wrong cluster,
// accepted otherwise, and its frames reach the host unchanged.
func TestStreamListenerSpeaksWire(t *testing.T) {
	tr := NewStreamTransport(42, 7, 0, testLogger(t))
	host := recordingHost{make(chan []byte, 4)}
	tr.Start(host)
	defer tr.Close()
	l := listen(t)
	defer l.Close()
	go tr.Serve(l)

	handshake := func(cluster uint64) (net.Conn, uint16) { return rawHello(t, l.Addr().String(), cluster, 5, 7, 0) }
	c, status := handshake(41)
	c.Close()
	if status != replyBadCluster {
		t.Fatalf("wrong cluster: status %d", status)
	}
	c, status = handshake(42)
	defer c.Close()
	if status != replyAccepted {
		t.Fatalf("status %d", status)
	}
	frame := binary.LittleEndian.AppendUint32(nil, 3)
	c.Write(append(frame, 'a', 'b', 'c'))
	select {
	case m := <-host.msgs:
		if !bytes.Equal(m, []byte("abc")) {
			t.Fatalf("got %q", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("frame not delivered")
	}
}

// rawHello dials addr, sends a hello by hand and returns the connection
// and the reply's status, checking the reply's other fields.
func rawHello(t *testing.T, addr string, cluster, from, to uint64, flags uint16) (net.Conn, uint16) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Write(encodeHello(cluster, from, to, flags))
	reply := make([]byte, replySize)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, reply); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Time{})
	if string(reply[:4]) != "EMRF" || binary.LittleEndian.Uint64(reply[8:]) != to {
		t.Fatalf("bad reply %x", reply)
	}
	return c, binary.LittleEndian.Uint16(reply[6:])
}

// recordingGroupHost records the frames and unreachable reports a group
// transport delivers.
type recordingGroupHost struct {
	frames      chan []byte
	unreachable chan uint64
}

func newRecordingGroupHost() recordingGroupHost {
	return recordingGroupHost{make(chan []byte, 4), make(chan uint64, 64)}
}

func (h recordingGroupHost) StepFrame(frame []byte) error { h.frames <- frame; return nil }
func (h recordingGroupHost) ReportUnreachable(peer uint64) {
	select {
	case h.unreachable <- peer:
	default:
	}
}

// The hello's group-frames flag (WIRE.md, "Group frames"): a runtime's
// listener takes only dialers that set it and a node's only dialers that
// do not, refusing the other kind with status 5; a transport refused so
// reports the peer unreachable.
func TestHandshakeFrameKindMustMatch(t *testing.T) {
	single := NewStreamTransport(42, 7, 0, testLogger(t))
	single.Start(recordingHost{make(chan []byte, 4)})
	defer single.Close()
	singleL := listen(t)
	defer singleL.Close()
	go single.Serve(singleL)

	groupHost := newRecordingGroupHost()
	group := NewGroupStreamTransport(42, 8, 0, testLogger(t))
	group.Start(groupHost)
	defer group.Close()
	groupL := listen(t)
	defer groupL.Close()
	go group.Serve(groupL)

	for _, tc := range []struct {
		name   string
		addr   string
		to     uint64
		flags  uint16
		status uint16
	}{
		{"node listener, single messages", singleL.Addr().String(), 7, 0, replyAccepted},
		{"node listener, group frames", singleL.Addr().String(), 7, helloGroupFrames, replyBadFrameKind},
		{"runtime listener, single messages", groupL.Addr().String(), 8, 0, replyBadFrameKind},
		{"runtime listener, group frames", groupL.Addr().String(), 8, helloGroupFrames, replyAccepted},
		// The other flag bits are reserved and ignored.
		{"runtime listener, reserved bits", groupL.Addr().String(), 8, helloGroupFrames | 0x8000, replyAccepted},
	} {
		c, status := rawHello(t, tc.addr, 42, 5, tc.to, tc.flags)
		c.Close()
		if status != tc.status {
			t.Errorf("%s: status %d, want %d", tc.name, status, tc.status)
		}
	}

	// An accepted group connection delivers frames unchanged.
	c, status := rawHello(t, groupL.Addr().String(), 42, 5, 8, helloGroupFrames)
	defer c.Close()
	if status != replyAccepted {
		t.Fatalf("status %d", status)
	}
	frame := []byte{1, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0xab}
	c.Write(append(binary.LittleEndian.AppendUint32(nil, uint32(len(frame))), frame...))
	select {
	case got := <-groupHost.frames:
		if !bytes.Equal(got, frame) {
			t.Fatalf("got %x", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("frame not delivered")
	}

	// Dialers: a runtime's transport dialing a node, refused, reports the
	// node unreachable, and so does a node's dialing a runtime.
	group.SetPeer(7, singleL.Addr().String())
	group.Send(7, frame)
	select {
	case peer := <-groupHost.unreachable:
		if peer != 7 {
			t.Fatalf("reported %d", peer)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("refused peer not reported unreachable")
	}
	singleHost := &unreachableHost{reported: make(chan uint64, 64)}
	single.Start(singleHost)
	single.SetPeer(8, groupL.Addr().String())
	single.Send(8, []byte("x"))
	select {
	case peer := <-singleHost.reported:
		if peer != 8 {
			t.Fatalf("reported %d", peer)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("refused peer not reported unreachable")
	}
}

type unreachableHost struct{ reported chan uint64 }

func (h *unreachableHost) Step([]byte) error { return nil }
func (h *unreachableHost) ReportUnreachable(peer uint64) {
	select {
	case h.reported <- peer:
	default:
	}
}
