//! The permission table of docs/permissions.md, for an outsider, a VIEWER, a MEMBER, an ADMIN,
//! the OWNER, and an approver named by a step's approval rule.

use serde_json::{Value, json};
use workflows_tests::TestApp;

use crate::{add_member, create_drive, create_template, echo, expect_code, steps_of};

struct Team {
    app: TestApp,
    drive: String,
    owner: String,
    admin: String,
    member: String,
    member2: String,
    viewer: String,
    outsider: String,
}

async fn team() -> Team {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let admin = app.user("admin").await;
    let member = app.user("member").await;
    let member2 = app.user("member2").await;
    let viewer = app.user("viewer").await;
    let outsider = app.user("outsider").await;
    let drive = create_drive(&app, &owner, "Team drive").await;
    add_member(&app, &owner, &drive, "admin", "ADMIN").await;
    add_member(&app, &owner, &drive, "member", "MEMBER").await;
    add_member(&app, &owner, &drive, "member2", "MEMBER").await;
    add_member(&app, &owner, &drive, "viewer", "VIEWER").await;
    Team {
        app,
        drive,
        owner,
        admin,
        member,
        member2,
        viewer,
        outsider,
    }
}

impl Team {
    /// (name, token) of everyone, outsider last.
    fn everyone(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("owner", self.owner.as_str()),
            ("admin", self.admin.as_str()),
            ("member", self.member.as_str()),
            ("member2", self.member2.as_str()),
            ("viewer", self.viewer.as_str()),
            ("outsider", self.outsider.as_str()),
        ]
    }

    /// Whether `token` sees the template by id, and by listing the drive.
    async fn sees_template(&self, token: &str, id: &str) -> bool {
        let data = self
            .app
            .ok(
                token,
                "query($id: ID!, $d: ID!) {
                   workflowTemplate(id: $id) { id }
                   workflowTemplates(driveId: $d, first: 100) { nodes { id } totalCount }
                 }",
                json!({ "id": id, "d": self.drive }),
            )
            .await;
        let by_id = !data["workflowTemplate"].is_null();
        let listed = data["workflowTemplates"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == id);
        assert_eq!(by_id, listed, "lookup and list disagree for {id}: {data}");
        assert_eq!(
            data["workflowTemplates"]["totalCount"],
            json!(data["workflowTemplates"]["nodes"].as_array().unwrap().len()),
            "totalCount counts what the viewer can see: {data}"
        );
        by_id
    }

    async fn template_name(&self, id: &str) -> Option<String> {
        let data = self
            .app
            .ok(
                &self.owner,
                "query($id: ID!) { workflowTemplate(id: $id) { name } }",
                json!({ "id": id }),
            )
            .await;
        data["workflowTemplate"]["name"].as_str().map(str::to_owned)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drives_are_visible_to_members_only() {
    let t = team().await;
    let expected_role = [
        ("owner", "OWNER"),
        ("admin", "ADMIN"),
        ("member", "MEMBER"),
        ("member2", "MEMBER"),
        ("viewer", "VIEWER"),
    ];
    for (who, token) in t.everyone() {
        let data = t
            .app
            .ok(
                token,
                "query($id: ID!) { drive(id: $id) { id name myRole owner { id } } drives { id } }",
                json!({ "id": t.drive }),
            )
            .await;
        let listed: Vec<&Value> = data["drives"].as_array().unwrap().iter().collect();
        match expected_role.iter().find(|(w, _)| *w == who) {
            Some((_, role)) => {
                assert_eq!(data["drive"]["id"], t.drive.as_str(), "{who}: {data}");
                assert_eq!(data["drive"]["name"], "Team drive", "{who}: {data}");
                assert_eq!(data["drive"]["myRole"], *role, "{who}: {data}");
                assert_eq!(data["drive"]["owner"]["id"], "owner", "{who}: {data}");
                assert_eq!(listed.len(), 1, "{who}: {data}");
                assert_eq!(listed[0]["id"], t.drive.as_str(), "{who}: {data}");
            }
            None => {
                assert!(data["drive"].is_null(), "{who} must not see the drive: {data}");
                assert!(listed.is_empty(), "{who} must not list the drive: {data}");
            }
        }
    }

    // Members see the member list with roles.
    let data = t
        .app
        .ok(
            &t.viewer,
            "query($id: ID!) { drive(id: $id) { members { user { id } role } } }",
            json!({ "id": t.drive }),
        )
        .await;
    let mut members: Vec<(String, String)> = data["drive"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["user"]["id"].as_str().unwrap().to_owned(),
                m["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    members.sort();
    let expected: Vec<(String, String)> = [
        ("admin", "ADMIN"),
        ("member", "MEMBER"),
        ("member2", "MEMBER"),
        ("owner", "OWNER"),
        ("viewer", "VIEWER"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(members, expected);

    // A drive id that does not exist is null, as for the outsider.
    let data = t
        .app
        .ok(&t.owner, "{ drive(id: \"no-such-drive\") { id } }", json!({}))
        .await;
    assert!(data["drive"].is_null(), "{data}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_templates_are_visible_to_their_creator_and_admins_only() {
    let t = team().await;
    let private = create_template(
        &t.app,
        &t.member,
        &t.drive,
        json!({ "name": "Member private", "isPublic": false, "steps": [echo("hi")] }),
    )
    .await;
    let public = create_template(
        &t.app,
        &t.member,
        &t.drive,
        json!({ "name": "Member public", "isPublic": true, "steps": [echo("hi")] }),
    )
    .await;
    // isPublic defaults to false.
    let default = create_template(&t.app, &t.owner, &t.drive, json!({ "name": "Owner default" })).await;
    assert_eq!(default["isPublic"], false, "{default}");

    let private_id = private["id"].as_str().unwrap();
    let public_id = public["id"].as_str().unwrap();
    let default_id = default["id"].as_str().unwrap();
    let table = [
        // who, sees private (member's), sees public, sees owner's private
        ("owner", true, true, true),
        ("admin", true, true, true),
        ("member", true, true, false),
        ("member2", false, true, false),
        ("viewer", false, true, false),
        ("outsider", false, false, false),
    ];
    for (who, token) in t.everyone() {
        let (_, p, q, o) = *table.iter().find(|r| r.0 == who).unwrap();
        assert_eq!(
            t.sees_template(token, private_id).await,
            p,
            "{who}: member's private template"
        );
        assert_eq!(t.sees_template(token, public_id).await, q, "{who}: public template");
        assert_eq!(
            t.sees_template(token, default_id).await,
            o,
            "{who}: owner's private template"
        );
    }

    // A step's template is reachable only through what one may see: the
    // outsider's list of the drive is empty.
    let data = t
        .app
        .ok(
            &t.outsider,
            "query($d: ID!) { workflowTemplates(driveId: $d) { nodes { id } totalCount pageInfo { hasNextPage } } }",
            json!({ "d": t.drive }),
        )
        .await;
    assert_eq!(
        data["workflowTemplates"],
        json!({ "nodes": [], "totalCount": 0, "pageInfo": { "hasNextPage": false } })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_templates_needs_member_or_higher() {
    let t = team().await;
    let input =
        |name: &str| json!({ "input": { "driveId": t.drive, "name": name, "isPublic": true, "steps": [echo("x")] } });
    let body = t.app.gql(&t.viewer, crate::CREATE_TEMPLATE, input("by viewer")).await;
    expect_code(&body, "FORBIDDEN");
    let body = t
        .app
        .gql(&t.outsider, crate::CREATE_TEMPLATE, input("by outsider"))
        .await;
    expect_code(&body, "NOT_FOUND");
    // Into a drive that does not exist: NOT_FOUND as well.
    let body = t
        .app
        .gql(
            &t.owner,
            crate::CREATE_TEMPLATE,
            json!({ "input": { "driveId": "no-such-drive", "name": "x" } }),
        )
        .await;
    expect_code(&body, "NOT_FOUND");

    for (who, token) in [("member", &t.member), ("admin", &t.admin), ("owner", &t.owner)] {
        let body = t
            .app
            .gql(token, crate::CREATE_TEMPLATE, input(&format!("by {who}")))
            .await;
        assert!(body.get("errors").is_none(), "{who}: {body}");
        assert_eq!(body["data"]["createWorkflowTemplate"]["createdBy"], who, "{body}");
    }

    let data = t
        .app
        .ok(
            &t.owner,
            "query($d: ID!) { workflowTemplates(driveId: $d) { nodes { name } totalCount } }",
            json!({ "d": t.drive }),
        )
        .await;
    let mut names: Vec<&str> = data["workflowTemplates"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["by admin", "by member", "by owner"], "{data}");
}

const UPDATE: &str =
    "mutation($id: ID!, $n: String!) { updateWorkflowTemplate(id: $id, input: { name: $n }) { id name } }";
const DELETE: &str = "mutation($id: ID!) { deleteWorkflowTemplate(id: $id) }";
const ADD_STEP: &str = "mutation($id: ID!) { addWorkflowStep(templateId: $id, input: { agentId: \"echo\", promptTemplate: \"added\" }) { id } }";
const UPDATE_STEP: &str =
    "mutation($id: ID!) { updateWorkflowStep(id: $id, input: { promptTemplate: \"changed\" }) { id promptTemplate } }";
const DELETE_STEP: &str = "mutation($id: ID!) { deleteWorkflowStep(id: $id) }";
const REORDER: &str =
    "mutation($id: ID!, $ids: [ID!]!) { reorderWorkflowSteps(templateId: $id, stepIds: $ids) { id } }";

/// Every change a user can try on a template and its steps, with the code
/// each must fail with; afterwards the template is unchanged.
async fn assert_cannot_change(t: &Team, who: &str, token: &str, template: &str, code: &str) {
    let before = steps_of(&t.app, &t.owner, template).await;
    let name_before = t.template_name(template).await;
    let ids: Vec<&str> = before.iter().rev().map(|(id, _)| id.as_str()).collect();
    let step = before[0].0.as_str();
    let attempts = [
        (
            "updateWorkflowTemplate",
            UPDATE,
            json!({ "id": template, "n": "hijacked" }),
        ),
        ("deleteWorkflowTemplate", DELETE, json!({ "id": template })),
        ("addWorkflowStep", ADD_STEP, json!({ "id": template })),
        ("updateWorkflowStep", UPDATE_STEP, json!({ "id": step })),
        ("deleteWorkflowStep", DELETE_STEP, json!({ "id": step })),
        ("reorderWorkflowSteps", REORDER, json!({ "id": template, "ids": ids })),
    ];
    for (what, query, vars) in attempts {
        let body = t.app.gql(token, query, vars).await;
        let got = body["errors"][0]["extensions"]["code"].as_str().unwrap_or("none");
        assert_eq!(got, code, "{who} {what}: {body}");
        expect_code(&body, code);
    }
    assert_eq!(
        steps_of(&t.app, &t.owner, template).await,
        before,
        "{who} changed steps"
    );
    assert_eq!(t.template_name(template).await, name_before, "{who} renamed it");
}

/// Every change succeeds for `token`; the template ends renamed to `name`
/// and deleted at the end only when `delete` is set.
async fn assert_can_change(t: &Team, who: &str, token: &str, template: &str, name: &str) {
    let body = t.app.gql(token, UPDATE, json!({ "id": template, "n": name })).await;
    assert!(body.get("errors").is_none(), "{who} update: {body}");
    assert_eq!(body["data"]["updateWorkflowTemplate"]["name"], name);
    let body = t.app.gql(token, ADD_STEP, json!({ "id": template })).await;
    assert!(body.get("errors").is_none(), "{who} addWorkflowStep: {body}");
    let added = body["data"]["addWorkflowStep"]["id"].as_str().unwrap().to_owned();
    let body = t.app.gql(token, UPDATE_STEP, json!({ "id": added })).await;
    assert!(body.get("errors").is_none(), "{who} updateWorkflowStep: {body}");
    assert_eq!(body["data"]["updateWorkflowStep"]["promptTemplate"], "changed");
    let steps = steps_of(&t.app, &t.owner, template).await;
    let reversed: Vec<&str> = steps.iter().rev().map(|(id, _)| id.as_str()).collect();
    let body = t
        .app
        .gql(token, REORDER, json!({ "id": template, "ids": reversed }))
        .await;
    assert!(body.get("errors").is_none(), "{who} reorderWorkflowSteps: {body}");
    let body = t.app.gql(token, DELETE_STEP, json!({ "id": added })).await;
    assert!(body.get("errors").is_none(), "{who} deleteWorkflowStep: {body}");
    assert_eq!(body["data"]["deleteWorkflowStep"], added.as_str());
    assert_eq!(steps_of(&t.app, &t.owner, template).await.len(), steps.len() - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_are_changed_by_their_creator_and_admins() {
    let t = team().await;
    let make =
        |public: bool, name: &str| json!({ "name": name, "isPublic": public, "steps": [echo("one"), echo("two")] });
    let public = create_template(&t.app, &t.member, &t.drive, make(true, "Public")).await;
    let private = create_template(&t.app, &t.member, &t.drive, make(false, "Private")).await;
    let public = public["id"].as_str().unwrap();
    let private = private["id"].as_str().unwrap();

    // Another MEMBER: sees the public one but may not change it; the private
    // one does not exist for them.
    assert_cannot_change(&t, "member2", &t.member2, public, "FORBIDDEN").await;
    assert_cannot_change(&t, "member2", &t.member2, private, "NOT_FOUND").await;
    assert_cannot_change(&t, "viewer", &t.viewer, public, "FORBIDDEN").await;
    assert_cannot_change(&t, "viewer", &t.viewer, private, "NOT_FOUND").await;
    assert_cannot_change(&t, "outsider", &t.outsider, public, "NOT_FOUND").await;
    assert_cannot_change(&t, "outsider", &t.outsider, private, "NOT_FOUND").await;

    // Ids that do not exist at all: NOT_FOUND.
    for (query, vars) in [
        (UPDATE, json!({ "id": "nope", "n": "x" })),
        (DELETE, json!({ "id": "nope" })),
        (ADD_STEP, json!({ "id": "nope" })),
        (UPDATE_STEP, json!({ "id": "nope" })),
        (DELETE_STEP, json!({ "id": "nope" })),
        (REORDER, json!({ "id": "nope", "ids": [] })),
    ] {
        let body = t.app.gql(&t.owner, query, vars).await;
        expect_code(&body, "NOT_FOUND");
    }

    // The creator (MEMBER), an ADMIN and the OWNER may change both.
    for template in [public, private] {
        assert_can_change(&t, "member", &t.member, template, "by creator").await;
        assert_can_change(&t, "admin", &t.admin, template, "by admin").await;
        assert_can_change(&t, "owner", &t.owner, template, "by owner").await;
    }

    // The creator demoted to VIEWER may no longer change their template.
    add_member(&t.app, &t.owner, &t.drive, "member", "VIEWER").await;
    assert_cannot_change(&t, "demoted creator", &t.member, public, "FORBIDDEN").await;
    // They still see their own private template, but cannot change it.
    assert!(t.sees_template(&t.member, private).await);
    assert_cannot_change(&t, "demoted creator", &t.member, private, "FORBIDDEN").await;

    // Deletion: ADMIN deletes the public one, the creator (MEMBER again) the private one.
    add_member(&t.app, &t.owner, &t.drive, "member", "MEMBER").await;
    let body = t.app.gql(&t.admin, DELETE, json!({ "id": public })).await;
    assert_eq!(body["data"]["deleteWorkflowTemplate"], public, "{body}");
    let body = t.app.gql(&t.member, DELETE, json!({ "id": private })).await;
    assert_eq!(body["data"]["deleteWorkflowTemplate"], private, "{body}");
    assert!(!t.sees_template(&t.owner, public).await);
    assert!(!t.sees_template(&t.owner, private).await);
}

const ADD_MEMBER: &str = "mutation($d: ID!, $u: ID!, $r: DriveRole!) { addDriveMember(driveId: $d, userId: $u, role: $r) { user { id } role } }";
const REMOVE_MEMBER: &str = "mutation($d: ID!, $u: ID!) { removeDriveMember(driveId: $d, userId: $u) }";

async fn roles(t: &Team) -> Vec<(String, String)> {
    let data = t
        .app
        .ok(
            &t.owner,
            "query($id: ID!) { drive(id: $id) { members { user { id } role } } }",
            json!({ "id": t.drive }),
        )
        .await;
    let mut out: Vec<(String, String)> = data["drive"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["user"]["id"].as_str().unwrap().to_owned(),
                m["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_managed_by_admins_and_the_owner() {
    let t = team().await;
    let newcomer = t.app.user("newcomer").await;
    let initial = roles(&t).await;

    // MEMBER and VIEWER: FORBIDDEN; outsider: NOT_FOUND. Nothing changes.
    for (who, token, code) in [
        ("member", &t.member, "FORBIDDEN"),
        ("viewer", &t.viewer, "FORBIDDEN"),
        ("outsider", &t.outsider, "NOT_FOUND"),
    ] {
        let body = t
            .app
            .gql(
                token,
                ADD_MEMBER,
                json!({ "d": t.drive, "u": "newcomer", "r": "MEMBER" }),
            )
            .await;
        assert_eq!(body["errors"][0]["extensions"]["code"], code, "{who} add: {body}");
        expect_code(&body, code);
        let body = t
            .app
            .gql(token, REMOVE_MEMBER, json!({ "d": t.drive, "u": "member2" }))
            .await;
        assert_eq!(body["errors"][0]["extensions"]["code"], code, "{who} remove: {body}");
        expect_code(&body, code);
    }
    assert_eq!(roles(&t).await, initial);

    // Nobody may remove the OWNER.
    for token in [&t.admin, &t.owner] {
        let body = t
            .app
            .gql(token, REMOVE_MEMBER, json!({ "d": t.drive, "u": "owner" }))
            .await;
        expect_code(&body, "FORBIDDEN");
    }
    // OWNER is not a role one can give.
    let body = t
        .app
        .gql(
            &t.owner,
            ADD_MEMBER,
            json!({ "d": t.drive, "u": "newcomer", "r": "OWNER" }),
        )
        .await;
    expect_code(&body, "BAD_USER_INPUT");
    // The OWNER's role cannot be taken away by re-adding them.
    let body = t
        .app
        .gql(
            &t.admin,
            ADD_MEMBER,
            json!({ "d": t.drive, "u": "owner", "r": "VIEWER" }),
        )
        .await;
    assert!(body.get("errors").is_some(), "demoting the OWNER must fail: {body}");
    // A user id never seen: NOT_FOUND.
    let body = t
        .app
        .gql(
            &t.admin,
            ADD_MEMBER,
            json!({ "d": t.drive, "u": "never-seen", "r": "MEMBER" }),
        )
        .await;
    expect_code(&body, "NOT_FOUND");
    assert_eq!(roles(&t).await, initial);

    // ADMIN adds the newcomer; they now see the drive.
    let data = t
        .app
        .ok(
            &newcomer,
            "query($id: ID!) { drive(id: $id) { id } }",
            json!({ "id": t.drive }),
        )
        .await;
    assert!(data["drive"].is_null());
    add_member(&t.app, &t.admin, &t.drive, "newcomer", "VIEWER").await;
    let data = t
        .app
        .ok(
            &newcomer,
            "query($id: ID!) { drive(id: $id) { myRole } }",
            json!({ "id": t.drive }),
        )
        .await;
    assert_eq!(data["drive"]["myRole"], "VIEWER");

    // Re-adding changes the role (still one membership).
    add_member(&t.app, &t.admin, &t.drive, "newcomer", "MEMBER").await;
    let data = t
        .app
        .ok(
            &newcomer,
            "query($id: ID!) { drive(id: $id) { myRole } }",
            json!({ "id": t.drive }),
        )
        .await;
    assert_eq!(data["drive"]["myRole"], "MEMBER");
    let after = roles(&t).await;
    assert_eq!(after.iter().filter(|(u, _)| u == "newcomer").count(), 1);
    assert!(after.contains(&("newcomer".into(), "MEMBER".into())));

    // ADMIN removes them: true, and the drive is gone for them.
    let body = t
        .app
        .gql(&t.admin, REMOVE_MEMBER, json!({ "d": t.drive, "u": "newcomer" }))
        .await;
    assert_eq!(body["data"]["removeDriveMember"], true, "{body}");
    let data = t
        .app
        .ok(
            &newcomer,
            "query($id: ID!) { drive(id: $id) { id } drives { id } }",
            json!({ "id": t.drive }),
        )
        .await;
    assert!(data["drive"].is_null(), "{data}");
    assert_eq!(data["drives"], json!([]));
    assert_eq!(roles(&t).await, initial);
    // Removing someone who is not a member: false.
    let body = t
        .app
        .gql(&t.admin, REMOVE_MEMBER, json!({ "d": t.drive, "u": "newcomer" }))
        .await;
    assert_eq!(body["data"]["removeDriveMember"], false, "{body}");

    // The OWNER promotes a MEMBER to ADMIN, who may then manage members.
    add_member(&t.app, &t.owner, &t.drive, "member2", "ADMIN").await;
    add_member(&t.app, &t.member2, &t.drive, "newcomer", "VIEWER").await;
    let body = t
        .app
        .gql(&t.member2, REMOVE_MEMBER, json!({ "d": t.drive, "u": "newcomer" }))
        .await;
    assert_eq!(body["data"]["removeDriveMember"], true, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execution_lists_are_empty_for_those_who_may_not_see_any() {
    let t = team().await;
    create_template(
        &t.app,
        &t.member,
        &t.drive,
        json!({ "name": "Runnable", "isPublic": true, "steps": [echo("x")] }),
    )
    .await;
    for (who, token) in t.everyone() {
        let data = t
            .app
            .ok(
                token,
                "query($d: ID!) {
                   all: workflowExecutions { nodes { id } totalCount pageInfo { hasNextPage } }
                   inDrive: workflowExecutions(filter: { driveId: $d }) { nodes { id } totalCount }
                   one: workflowExecution(id: \"no-such-execution\") { id }
                 }",
                json!({ "d": t.drive }),
            )
            .await;
        assert_eq!(data["all"]["nodes"], json!([]), "{who}: {data}");
        assert_eq!(data["all"]["totalCount"], 0, "{who}: {data}");
        assert_eq!(data["inDrive"]["nodes"], json!([]), "{who}: {data}");
        assert!(data["one"].is_null(), "{who}: {data}");
    }
}

/// Runs are seen by their starter and ADMIN/OWNER, and by the approvers of a
/// step they await or awaited (docs/permissions.md, "Approvers"); only those the rule names
/// decide: the others who see the run get FORBIDDEN, the rest NOT_FOUND.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvers_see_the_runs_that_await_them_and_only_they_decide() {
    let t = team().await;
    let template = create_template(
        &t.app,
        &t.member2,
        &t.drive,
        json!({ "name": "Gated", "isPublic": true, "steps": [
            { "agentId": "slow", "promptTemplate": "400" },
            { "agentId": "echo", "promptTemplate": "ship", "approval": { "required": 1, "userIds": ["viewer"] } }
        ]}),
    )
    .await;
    let id = crate::executions::start(&t.app, &t.member2, template["id"].as_str().unwrap(), json!({})).await;
    let sees = |token: String| {
        let app = &t.app;
        let id = id.clone();
        async move {
            let data = app
                .ok(
                    &token,
                    "query($id: ID!) { workflowExecution(id: $id) { id } }",
                    json!({ "id": id }),
                )
                .await;
            !data["workflowExecution"].is_null()
        }
    };
    // Not reached yet: the approver does not see it.
    assert!(!sees(t.viewer.clone()).await, "the approval step is not reached yet");
    crate::executions::wait_for(&t.app, &t.member2, &id, "PAUSED").await;
    let expected = [
        ("owner", true, "FORBIDDEN"),
        ("admin", true, "FORBIDDEN"),
        ("member", false, "NOT_FOUND"),
        ("member2", true, "FORBIDDEN"),
        ("outsider", false, "NOT_FOUND"),
    ];
    let decide = "mutation($e: ID!) { decideWorkflowApproval(executionId: $e, approve: true) { status } }";
    for ((who, token), (name, visible, code)) in t.everyone().into_iter().filter(|(w, _)| *w != "viewer").zip(expected)
    {
        assert_eq!(who, name);
        assert_eq!(sees(token.to_owned()).await, visible, "{who} sees the run");
        expect_code(&t.app.gql(token, decide, json!({ "e": id })).await, code);
    }
    assert!(sees(t.viewer.clone()).await, "the approver sees the run awaiting them");
    let r = t.app.ok(&t.viewer, decide, json!({ "e": id })).await;
    assert_eq!(r["decideWorkflowApproval"]["status"], "RUNNING");
    crate::executions::wait_for(&t.app, &t.member2, &id, "COMPLETED").await;
    assert!(sees(t.viewer.clone()).await, "and the run that awaited them");
}
