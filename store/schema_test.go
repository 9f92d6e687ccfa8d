package store

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestSchemaInOnePlace: every bucket and every meta key is drawn in the
// package doc, every MetaKey constant is in metaKeys, and no package
// outside store names the meta bucket (its keys are declared here only).
func TestSchemaInOnePlace(t *testing.T) {
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range Buckets() {
		if !strings.Contains(string(doc), "//\t"+string(b)+"/ ") {
			t.Errorf("bucket %s is not drawn in the package doc", b)
		}
	}
	for _, k := range metaKeys {
		if !strings.Contains(string(doc), "│   "+string(k)+" ") {
			t.Errorf("meta key %s is not drawn in the package doc", k)
		}
	}

	// Every constant of type MetaKey is listed (so the doc check sees it).
	f, err := parser.ParseFile(token.NewFileSet(), "meta.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var declared []string
	ast.Inspect(f, func(n ast.Node) bool {
		if vs, ok := n.(*ast.ValueSpec); ok {
			if id, ok := vs.Type.(*ast.Ident); ok && id.Name == "MetaKey" {
				for _, v := range vs.Values {
					declared = append(declared, strings.Trim(v.(*ast.BasicLit).Value, `"`))
				}
			}
		}
		return true
	})
	listed := make([]string, len(metaKeys))
	for i, k := range metaKeys {
		listed[i] = string(k)
	}
	slices.Sort(declared)
	slices.Sort(listed)
	if !slices.Equal(declared, listed) || len(declared) == 0 {
		t.Errorf("MetaKey constants %v, metaKeys lists %v", declared, listed)
	}

	// Outside store (tests aside), the meta bucket is reached only through
	// MetaKey.
	err = filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != ".." && (strings.HasPrefix(name, ".") || name == "testdata" || name == "vendor" || path == filepath.Join("..", "store")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.Contains(string(b), "store.BucketMeta") {
			t.Errorf("%s names store.BucketMeta: declare its key as a store.MetaKey and use Tx.GetMeta/PutMeta", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
