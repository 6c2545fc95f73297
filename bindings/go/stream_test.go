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

	handshake := func(cluster uint64) (net.Conn, uint16) {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write(encodeHello(cluster, 5, 7, 0))
		reply := make([]byte, replySize)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, reply); err != nil {
			t.Fatal(err)
		}
		if string(reply[:4]) != "EMRF" || binary.LittleEndian.Uint64(reply[8:]) != 7 {
			t.Fatalf("bad reply %x", reply)
		}
		return c, binary.LittleEndian.Uint16(reply[6:])
	}
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
