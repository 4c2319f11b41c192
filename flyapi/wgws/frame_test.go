package wgws

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

func TestReadFrameAcrossBoundaries(t *testing.T) {
	var stream []byte
	stream = AppendFrame(stream, []byte("first"))
	stream = AppendFrame(stream, nil) // keepalive
	stream = AppendFrame(stream, bytes.Repeat([]byte{7}, 1500))
	// One byte at a time: frames split anywhere, as messages may split them.
	br := bufio.NewReaderSize(iotestOneByte{bytes.NewReader(stream)}, 16)
	buf := make([]byte, MaxDatagram)
	for i, want := range []int{5, 0, 1500} {
		n, err := ReadFrame(br, buf)
		if err != nil || n != want {
			t.Fatalf("frame %d: n=%d err=%v, want %d", i, n, err, want)
		}
	}
	if _, err := ReadFrame(br, buf); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last frame: %v, want EOF", err)
	}
}

type iotestOneByte struct{ r io.Reader }

func (o iotestOneByte) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

func TestReadFrameErrors(t *testing.T) {
	big := binary.BigEndian.AppendUint32(nil, MaxDatagram+1)
	for _, tc := range []struct {
		name string
		in   []byte
		buf  int
		want error
	}{
		{"oversized", big, MaxDatagram, ErrFrameTooLarge},
		{"header cut", []byte{0, 0}, MaxDatagram, io.ErrUnexpectedEOF},
		{"payload cut", AppendFrame(nil, make([]byte, 100))[:50], MaxDatagram, io.ErrUnexpectedEOF},
		{"bigger than buffer", AppendFrame(nil, make([]byte, 100)), 10, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadFrame(bufio.NewReader(bytes.NewReader(tc.in)), make([]byte, tc.buf))
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestReadMagic(t *testing.T) {
	if err := ReadMagic(bytes.NewReader([]byte{0x2f, 0xac, 0xed, 0x77})); err != nil {
		t.Fatal(err)
	}
	if err := ReadMagic(bytes.NewReader(AppendFrame(nil, []byte("x")))); !errors.Is(err, ErrBadMagic) {
		t.Fatalf("no magic: %v", err)
	}
}

// FuzzReadFrame: any byte stream gives frames or an error, never a panic,
// never a payload over the limit; re-encoding what was read reproduces the
// consumed input.
func FuzzReadFrame(f *testing.F) {
	f.Add(AppendFrame(AppendFrame(nil, []byte("hello")), nil))
	f.Add(binary.BigEndian.AppendUint32(nil, 0xffffffff))
	f.Add([]byte{0, 0, 0})
	f.Add(AppendFrame(nil, make([]byte, 148)))
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(in), 16)
		buf := make([]byte, MaxDatagram)
		var again []byte
		for {
			buffered := FrameBuffered(br)
			n, err := ReadFrame(br, buf)
			if err != nil {
				if buffered && !errors.Is(err, ErrFrameTooLarge) {
					t.Fatalf("FrameBuffered said a frame was ready, then: %v", err)
				}
				break
			}
			if n > MaxDatagram {
				t.Fatalf("payload %d", n)
			}
			again = AppendFrame(again, buf[:n])
		}
		if !bytes.HasPrefix(in, again) {
			t.Fatal("re-encoded frames differ from the input")
		}
	})
}
