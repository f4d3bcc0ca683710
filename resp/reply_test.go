package resp

import "testing"

func TestWriter_EncodesBothProtocols(t *testing.T) {
	tests := []struct {
		name         string
		write        func(w *Writer)
		resp2, resp3 string
	}{
		{"null", (*Writer).Null, "$-1\r\n", "_\r\n"},
		{"map", func(w *Writer) { w.Map(1); w.BulkString("a"); w.Int(1) }, "*2\r\n$1\r\na\r\n:1\r\n", "%1\r\n$1\r\na\r\n:1\r\n"},
		{"verbatim", func(w *Writer) { w.Verbatim("x:1\r\n") }, "$5\r\nx:1\r\n\r\n", "=9\r\ntxt:x:1\r\n\r\n"},
		{"error keeps one line", func(w *Writer) { w.Error("ERR a\r\nb") }, "-ERR a  b\r\n", "-ERR a  b\r\n"},
		{"bulk", func(w *Writer) { w.Bulk([]byte("hi")) }, "$2\r\nhi\r\n", "$2\r\nhi\r\n"},
		{"simple", func(w *Writer) { w.Simple("PONG") }, "+PONG\r\n", "+PONG\r\n"},
		{"int", func(w *Writer) { w.Int(-7) }, ":-7\r\n", ":-7\r\n"},
	}
	for _, tt := range tests {
		for _, p := range []struct {
			proto int
			want  string
		}{{2, tt.resp2}, {3, tt.resp3}} {
			w := Writer{Proto: p.proto}
			tt.write(&w)
			if got := string(w.B); got != p.want {
				t.Errorf("%s RESP%d: got %q, want %q", tt.name, p.proto, got, p.want)
			}
		}
	}
}
