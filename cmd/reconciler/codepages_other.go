//go:build !linux

package main

// releaseCodePages is Linux-only (/proc/self/maps, madvise).
func releaseCodePages() (int64, error) { return 0, nil }
