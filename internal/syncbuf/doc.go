// Package syncbuf holds Buffer, a bytes.Buffer safe for concurrent use: the
// output of a process or a logger that one goroutine writes while a test
// reads it. It is the one such buffer of the project's tests.
//
// syncbuf.go holds Buffer.
package syncbuf
