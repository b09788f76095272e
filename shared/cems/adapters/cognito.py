"""The operators' accounts in a Cognito user pool (OperatorPool in template.yaml; moto's locally)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError as BotoClientError

from cems.adapters.dynamodb.items import error_code
from cems.console.access import Role
from cems.console.operators import Tokens
from cems.errors import ClientError

# What Cognito answers for a wrong password, an unknown user (PreventUserExistenceErrors turns that
# into NotAuthorized on a stage) or a disabled one: all the same "no" to the caller.
_REFUSALS = {"NotAuthorizedException", "UserNotFoundException", "UserNotConfirmedException"}


class CognitoOperatorAccounts:
    def __init__(self, client: Any, pool_id: str, client_id: str) -> None:
        self.client = client
        self.pool_id = pool_id
        self.client_id = client_id

    def authenticate(self, username: str, password: str) -> Tokens | None:
        try:
            answer = self.client.initiate_auth(
                ClientId=self.client_id,
                AuthFlow="USER_PASSWORD_AUTH",
                AuthParameters={"USERNAME": username, "PASSWORD": password},
            )
        except BotoClientError as error:
            if error_code(error) in _REFUSALS:
                return None
            raise
        result = answer.get("AuthenticationResult")
        if result is None:
            # A challenge: an operator created with a temporary password must set a new one first.
            raise ClientError(
                409,
                "new_password_required",
                "初回のパスワード変更が必要です。管理者に連絡してください / the password must be changed "
                "first: ask an administrator",
                field=str(answer.get("ChallengeName", "challenge")),
            )
        return Tokens(id_token=result["IdToken"], expires_in=int(result.get("ExpiresIn", 3600)))

    def roles_of(self, username: str) -> frozenset[Role]:
        groups = self.client.admin_list_groups_for_user(UserPoolId=self.pool_id, Username=username)["Groups"]
        known = {role.value: role for role in Role}
        return frozenset(known[g["GroupName"]] for g in groups if g["GroupName"] in known)

    def add(self, username: str, role: Role, password: str) -> None:
        try:
            self.client.admin_create_user(
                UserPoolId=self.pool_id,
                Username=username,
                MessageAction="SUPPRESS",  # the password is handed over by the administrator
            )
        except BotoClientError as error:
            if error_code(error) == "UsernameExistsException":
                raise ClientError(
                    409, "operator_exists", f"{username} は登録済みです / already exists"
                ) from None
            raise
        self.client.admin_set_user_password(
            UserPoolId=self.pool_id, Username=username, Password=password, Permanent=True
        )
        self.client.admin_add_user_to_group(UserPoolId=self.pool_id, Username=username, GroupName=role.value)

    def set_role(self, username: str, role: Role) -> frozenset[Role]:
        """`role` becomes the operator's only role; the roles they had before. 404 for no such
        operator. Added before the others are removed, so the operator is never left with none."""
        try:
            before = self.roles_of(username)
        except BotoClientError as error:
            if error_code(error) == "UserNotFoundException":
                message = f"{username} は登録されていません / no such operator"
                raise ClientError(404, "operator_not_found", message, field="username") from None
            raise
        self.client.admin_add_user_to_group(UserPoolId=self.pool_id, Username=username, GroupName=role.value)
        for old in before - {role}:
            self.client.admin_remove_user_from_group(
                UserPoolId=self.pool_id, Username=username, GroupName=old.value
            )
        return before
