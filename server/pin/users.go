package pin

import (
	"context"

	"github.com/keywarden/keywarden/enclave"
)

// Users is the admin API's view of the PIN records (server.UserData,
// server.OwnerData and server.OwnerDeleter): the owner description shows
// the registration's state (never its secrets), and the admin's deletion
// of a user or a Firebase owner removes the registration with the key.
type Users struct{ Service *Service }

// Name is the key of the description.
func (Users) Name() string { return "pin" }

// DescribeOwner is the registration's Status, nil when there is none.
func (u Users) DescribeOwner(ctx context.Context, owner enclave.Owner) (any, error) {
	st, err := u.Service.Status(ctx, owner)
	if err != nil || (!st.Registered && st.GuessLimit == 0) {
		return nil, err
	}
	return st, nil
}

// DescribeUser is DescribeOwner of user:<userID>.
func (u Users) DescribeUser(ctx context.Context, userID string) (any, error) {
	return u.DescribeOwner(ctx, enclave.UserOwner(userID))
}

// DeleteUser removes the PIN records and the key of user:<userID>.
func (u Users) DeleteUser(ctx context.Context, userID string) error {
	return u.DeleteOwnerData(ctx, enclave.UserOwner(userID))
}

// DeleteOwnerData removes the PIN records and the key of owner.
func (u Users) DeleteOwnerData(ctx context.Context, owner enclave.Owner) error {
	return u.Service.DeleteOwner(ctx, owner, true)
}
