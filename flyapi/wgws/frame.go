// Package wgws is WireGuard over WebSocket as Fly's gateways serve it to
// flyctl: the client Dial, the gateway-side Accept, and the framing both
// speak. It is a leaf of the flyapi tree, shared by the sidecar's transport
// and the test double's gateway.
//
// The WebSocket framing is the one flyctl speaks (its wg/ws.go): after the
// upgrade the client writes the 4-byte big-endian Magic; then each datagram
// is a 4-byte big-endian length and the payload, sent as one text message.
// The peer answers with frames of the same shape. Readers treat the messages
// as one byte stream (older flyctl split length and payload in two
// messages). A zero-length frame is a keepalive.
package wgws

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Magic is written by the client right after the WebSocket upgrade.
const Magic uint32 = 0x2FACED77

// MaxDatagram is the largest payload a frame may announce: the largest UDP
// datagram, and wireguard-go's MaxMessageSize.
const MaxDatagram = 1<<16 - 1

// FrameHeaderLen is the length prefix in bytes.
const FrameHeaderLen = 4

// ErrFrameTooLarge: a frame announced more than MaxDatagram bytes. The
// stream cannot be resynchronised; drop the connection.
var ErrFrameTooLarge = errors.New("frame larger than 65535 bytes")

// ErrBadMagic: the first four bytes of a client stream were not Magic.
var ErrBadMagic = errors.New("stream does not start with magic 0x2faced77")

// AppendFrame appends the frame for payload (length prefix and payload) to
// dst. An empty payload is a keepalive.
func AppendFrame(dst, payload []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(payload)))
	return append(dst, payload...)
}

// ReadMagic reads and checks the client's magic from r.
func ReadMagic(r io.Reader) error {
	var b [4]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return fmt.Errorf("read magic: %w", err)
	}
	if binary.BigEndian.Uint32(b[:]) != Magic {
		return fmt.Errorf("%w (got %#08x)", ErrBadMagic, binary.BigEndian.Uint32(b[:]))
	}
	return nil
}

// BufferedReader is what ReadFrame needs: a buffered byte stream.
type BufferedReader interface {
	io.Reader
	Peek(n int) ([]byte, error)
	Discard(n int) (int, error)
	Buffered() int
}

// ReadFrame reads one frame from r into buf and returns its payload length
// (0 for a keepalive). A payload longer than buf or MaxDatagram is an
// error; the stream is then unusable.
func ReadFrame(r BufferedReader, buf []byte) (int, error) {
	hdr, err := r.Peek(FrameHeaderLen)
	if err != nil {
		if errors.Is(err, io.EOF) && len(hdr) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return 0, err
	}
	n := binary.BigEndian.Uint32(hdr)
	if n > MaxDatagram {
		return 0, fmt.Errorf("%w: header says %d", ErrFrameTooLarge, n)
	}
	if int(n) > len(buf) {
		return 0, fmt.Errorf("frame of %d bytes does not fit a %d-byte buffer", n, len(buf))
	}
	_, _ = r.Discard(FrameHeaderLen)
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, fmt.Errorf("read %d-byte frame: %w", n, err)
	}
	return int(n), nil
}

// FrameBuffered reports whether a whole frame is already buffered in r, so
// that ReadFrame will not block.
func FrameBuffered(r BufferedReader) bool {
	if r.Buffered() < FrameHeaderLen {
		return false
	}
	hdr, _ := r.Peek(FrameHeaderLen)
	n := binary.BigEndian.Uint32(hdr)
	return n > MaxDatagram || r.Buffered() >= FrameHeaderLen+int(n)
}
