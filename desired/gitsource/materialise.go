package gitsource

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"resil.dev/resil/desired"
)

// ErrInvalid marks a revision that cannot be deployed as it is: a path
// missing from it, two files of the same name from different paths, a
// symlink, or manifests that do not validate. Matched with errors.Is.
var ErrInvalid = errors.New("invalid revision")

// maxRevisionBytes caps what one revision may unpack to.
const maxRevisionBytes = 64 << 20

// composed is a revision materialised into one directory.
type composed struct {
	// origin maps a file relative to the directory to its path in the
	// repository (for errors).
	origin map[string]string
}

// materialise writes the trees at paths of commit into dir (which must not
// exist), composed into one directory: the contents of each path are
// merged at dir's top, a file given by two paths is an error. Every file
// and directory is fsynced. Then the local drop-in folders (NAME.d/ of
// localDropIns, if set) are copied in. An ErrInvalid error says the
// revision itself is at fault; any other error is local (disk, git).
func materialise(ctx context.Context, g *git, commit string, paths []string, localDropIns, dir string, opts desired.Options) (*composed, error) {
	args := []string{"archive", "--format=tar", commit, "--"}
	for _, p := range paths {
		args = append(args, cleanRepoPath(p))
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	c := &composed{origin: map[string]string{}}
	dirs := map[string]bool{".": true}
	// The archive is read as git writes it: a revision over the cap is
	// refused at the header that passes it, with git stopped, instead of
	// held whole in the agent's memory first.
	err := g.stream(ctx, func(r io.Reader) error { return untar(r, commit, paths, dir, c, dirs) }, args...)
	if err != nil {
		var ge *gitError
		if errors.As(err, &ge) && strings.Contains(ge.stderr, "did not match any files") {
			return nil, fmt.Errorf("%w: %s", ErrInvalid, strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(ge.stderr), "fatal: ")))
		}
		return nil, err
	}
	if localDropIns != "" {
		if err := copyDropIns(localDropIns, dir, c, dirs, opts); err != nil {
			return nil, err
		}
	}
	// Directories deepest first, then dir itself.
	list := make([]string, 0, len(dirs))
	for d := range dirs {
		list = append(list, d)
	}
	sort.Slice(list, func(i, j int) bool { return len(list[i]) > len(list[j]) })
	for _, d := range list {
		if err := syncPath(filepath.Join(dir, d)); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// untar writes the entries of a git archive stream that lie under paths
// into dir (see materialise), recording each file's origin in c and each
// directory made in dirs.
func untar(r io.Reader, commit string, paths []string, dir string, c *composed, dirs map[string]bool) error {
	tr := tar.NewReader(r)
	var total int64
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("git archive %s: %w", commit, err)
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		name := strings.TrimSuffix(h.Name, "/")
		rel, ok := relTo(name, h.Typeflag == tar.TypeDir, paths)
		if !ok || rel == "." {
			continue // a parent directory of a path
		}
		if !filepath.IsLocal(rel) {
			return fmt.Errorf("%w: %s: path escapes the manifests directory", ErrInvalid, name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if !dirs[rel] {
				if err := os.Mkdir(filepath.Join(dir, rel), 0o755); err != nil {
					return err
				}
				dirs[rel] = true
			}
		case tar.TypeReg:
			if prev, dup := c.origin[rel]; dup {
				return fmt.Errorf("%w: %s and %s: two files named %s in the composed manifests", ErrInvalid, prev, name, rel)
			}
			total += h.Size
			if total > maxRevisionBytes {
				return fmt.Errorf("%w: more than %d bytes under the paths", ErrInvalid, maxRevisionBytes)
			}
			if err := mkParents(dir, rel, dirs); err != nil {
				return err
			}
			if err := writeSynced(filepath.Join(dir, rel), tr); err != nil {
				return err
			}
			c.origin[rel] = name
		case tar.TypeSymlink, tar.TypeLink:
			return fmt.Errorf("%w: %s: symlinks are not deployed", ErrInvalid, name)
		default:
			return fmt.Errorf("%w: %s: unsupported file type", ErrInvalid, name)
		}
	}
	return nil
}

// cleanRepoPath is p as git archive takes it ("." for the whole tree).
func cleanRepoPath(p string) string {
	p = path.Clean(strings.Trim(p, "/"))
	if p == "" {
		return "."
	}
	return p
}

// relTo says where archive entry name goes: relative to the path that
// contains it (a file given as a path goes to the top by its base name; a
// directory given as a path is the top itself, ".").
func relTo(name string, isDir bool, paths []string) (string, bool) {
	for _, p := range paths {
		p = cleanRepoPath(p)
		switch {
		case p == ".":
			return name, true
		case name == p && isDir:
			return ".", true
		case name == p:
			return path.Base(name), true
		case strings.HasPrefix(name, p+"/"):
			return strings.TrimPrefix(name, p+"/"), true
		}
	}
	return "", false
}

func mkParents(dir, rel string, dirs map[string]bool) error {
	parent := filepath.Dir(rel)
	if dirs[parent] {
		return nil
	}
	if err := mkParents(dir, parent, dirs); err != nil {
		return err
	}
	if err := os.Mkdir(filepath.Join(dir, parent), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	dirs[parent] = true
	return nil
}

func writeSynced(name string, r io.Reader) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncPath(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// copyDropIns copies the NAME.d/ folders of local (only their regular,
// non-hidden files) into dir. A local file with the name of a file of the
// revision is an error. Each file is read as Load reads a drop-in, with
// the agent's load options (desired.ReadChecked: owner and mode of the
// file, its folder and every directory above it, on the descriptors
// read): the copy is root's, so the composed revision's own load would
// not see who could write the original. A refused or busy file fails the
// composition (a local error: the deployed revision stays).
func copyDropIns(local, dir string, c *composed, dirs map[string]bool, opts desired.Options) error {
	ents, err := os.ReadDir(local)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("local drop-ins: %w", err)
	}
	for _, e := range ents {
		if !e.IsDir() || !strings.HasSuffix(e.Name(), ".d") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		files, err := os.ReadDir(filepath.Join(local, e.Name()))
		if err != nil {
			return fmt.Errorf("local drop-ins: %w", err)
		}
		for _, f := range files {
			if !f.Type().IsRegular() || strings.HasPrefix(f.Name(), ".") {
				continue
			}
			rel := filepath.Join(e.Name(), f.Name())
			src := filepath.Join(local, rel)
			if prev, dup := c.origin[rel]; dup {
				return fmt.Errorf("%w: local drop-in %s has the name of %s", ErrInvalid, src, prev)
			}
			if err := mkParents(dir, rel, dirs); err != nil {
				return err
			}
			b, err := desired.ReadChecked(src, opts)
			if err != nil {
				return fmt.Errorf("local drop-ins: %w", err)
			}
			if err := writeSynced(filepath.Join(dir, rel), bytes.NewReader(b)); err != nil {
				return err
			}
			c.origin[rel] = src
		}
	}
	return nil
}

// validate loads dir as the agent would (opts) and returns an ErrInvalid
// error naming every problem, with repository paths for file names.
func validate(dir string, opts desired.Options, c *composed, render func(*desired.Object) ([]desired.UnitFile, error)) error {
	set, err := desired.Load(dir, opts)
	var problems []string
	if err != nil {
		problems = append(problems, err.Error())
	}
	if set != nil && render != nil {
		for _, o := range set.Sorted() {
			if _, err := render(o); err != nil {
				problems = append(problems, fmt.Sprintf("%s: %s: %v", filepath.Join(dir, o.Source.File), o.ID(), err))
			}
		}
	}
	if set != nil {
		var empty []string
		for f := range set.Empty {
			empty = append(empty, f)
		}
		sort.Strings(empty)
		for _, f := range empty {
			problems = append(problems, filepath.Join(dir, f)+": holds no document")
		}
	}
	if len(problems) == 0 {
		return nil
	}
	msg := strings.Join(problems, "\n")
	// Name files by their repository path.
	var pairs []string
	rels := make([]string, 0, len(c.origin))
	for rel := range c.origin {
		rels = append(rels, rel)
	}
	sort.Slice(rels, func(i, j int) bool { return len(rels[i]) > len(rels[j]) })
	resolved, _ := filepath.EvalSymlinks(dir)
	for _, rel := range rels {
		pairs = append(pairs, filepath.Join(dir, rel), c.origin[rel])
		if resolved != "" && resolved != dir {
			pairs = append(pairs, filepath.Join(resolved, rel), c.origin[rel])
		}
	}
	if len(pairs) > 0 {
		msg = strings.NewReplacer(pairs...).Replace(msg)
	}
	return fmt.Errorf("%w:\n%s", ErrInvalid, msg)
}
