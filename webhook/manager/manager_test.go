package manager_test

import (
	"reflect"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"

	"github.com/glaceon/glaceon/webhook/admission"
	"github.com/glaceon/glaceon/webhook/manager"
	"github.com/glaceon/glaceon/webhook/manager/managertest"
)

// TestGoValuesMatchDeploy ties the Go values that mirror
// deploy/webhook/mutatingwebhookconfiguration.yaml to the file.
func TestGoValuesMatchDeploy(t *testing.T) {
	mwc, err := managertest.WebhookConfiguration("https://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if len(mwc.Webhooks) != 1 {
		t.Fatalf("%d webhooks in deploy/webhook, want 1", len(mwc.Webhooks))
	}
	wh := mwc.Webhooks[0]
	if wh.TimeoutSeconds == nil || time.Duration(*wh.TimeoutSeconds)*time.Second != manager.WebhookTimeout {
		t.Errorf("deploy/webhook timeoutSeconds = %v, manager.WebhookTimeout = %s", wh.TimeoutSeconds, manager.WebhookTimeout)
	}
	if got, want := *wh.ClientConfig.URL, "https://127.0.0.1:1"+admission.Path; got != want {
		t.Errorf("deploy/webhook path gives URL %s, want %s (admission.Path)", got, want)
	}
	// The namespace glaceon is installed in is the webhook Service's.
	var excluded []string
	for _, e := range wh.NamespaceSelector.MatchExpressions {
		if e.Key == "kubernetes.io/metadata.name" && e.Operator == "NotIn" {
			excluded = e.Values
		}
	}
	if want := manager.ExcludedNamespaces(managertest.Namespace); !reflect.DeepEqual(excluded, want) {
		t.Errorf("deploy/webhook excludes namespaces %q, manager.ExcludedNamespaces %q", excluded, want)
	}
	if wh.FailurePolicy == nil || *wh.FailurePolicy != admissionregistrationv1.Fail {
		t.Errorf("failurePolicy = %v, want Fail", wh.FailurePolicy)
	}
}
