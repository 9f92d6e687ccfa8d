package apivalidate

import "testing"

func TestDocumentLoads(t *testing.T) {
	if _, err := Default(); err != nil {
		t.Fatal(err)
	}
}
