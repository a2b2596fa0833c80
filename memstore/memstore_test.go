package memstore_test

import (
	"testing"

	"github.com/openverify/verify"
	"github.com/openverify/verify/memstore"
	"github.com/openverify/verify/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) verify.Store { return memstore.New() })
}
