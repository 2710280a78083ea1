package tunnel

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// A client may send its first frames right behind the upgrade request,
// without waiting for the 101: the bytes net/http has already read past the
// request must reach the session. Here the first frame is a yamux ping,
// which the relay's side answers.
func TestAcceptKeepsBytesSentWithTheUpgrade(t *testing.T) {
	accepted := make(chan *Session, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := Accept(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		accepted <- s
	}))
	defer srv.Close()
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))

	// A yamux ping (type 2, flag SYN) with an opaque value, as one masked
	// binary WebSocket frame, in the same write as the request.
	ping := make([]byte, yamuxHeaderSize)
	ping[1], ping[3] = 2, 1
	binary.BigEndian.PutUint32(ping[8:], 0x01020304)
	mask := [4]byte{1, 2, 3, 4}
	frame := append([]byte{0x82, 0x80 | byte(len(ping))}, mask[:]...)
	for i, b := range ping {
		frame = append(frame, b^mask[i%4])
	}
	req := "GET /tunnel HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Protocol: " + Subprotocol + "\r\n\r\n"
	if _, err := c.Write(append([]byte(req), frame...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v, %v", resp, err)
	}
	s := <-accepted
	defer s.Close()
	// The answer: an unmasked binary frame holding the ping's ACK (flag 2)
	// with the same value.
	got := make([]byte, 2+yamuxHeaderSize)
	if _, err := io.ReadFull(br, got); err != nil {
		t.Fatalf("no answer to the ping sent with the upgrade: %v", err)
	}
	h := got[2:]
	if got[0] != 0x82 || h[1] != 2 || binary.BigEndian.Uint16(h[2:]) != 2 || binary.BigEndian.Uint32(h[8:]) != 0x01020304 {
		t.Fatalf("answer %x, want a ping ACK of 01020304", got)
	}
}
