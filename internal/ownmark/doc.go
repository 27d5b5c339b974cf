// Package ownmark defines how resil marks the files it owns, and reads the
// marks back. Every rendered unit file carries X-Resil-Object (the object
// it was rendered from), X-Resil-Source (its manifest files) and
// X-Resil-Hash (of the rest of the file, so a hand edit shows); the manager
// drop-in WatchdogFile carries X-Resil-Object as a comment.
//
// The mark alone decides ownership: IsOwned needs no local state, so an
// agent with an empty state directory still never touches a file it did
// not write, and still finds the files it wrote and must prune.
//
// It sits below desired (which writes the marks when it renders), the
// observers and the actuators (which read them), so none of those import
// each other for it. ownmark.go holds everything.
package ownmark
