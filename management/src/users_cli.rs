//! `nb-management user …`: manage users straight in the database, for the first admin and for
//! recovery. Each change is in the audit log as made by `command line` from `local`.

use std::io::{BufRead, IsTerminal};

use crate::api::{name_problems, password_problems, Change, UserView};
use crate::auth::{generate_id, hash_password};
use crate::cli::UserCommand;
use crate::config::Config;
use crate::store::{Role, Store};
use crate::validate::FieldProblem;

pub const CLI_ACTOR: &str = "command line";

fn problems_text(problems: &[FieldProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {}", p.field, p.message))
        .collect::<Vec<_>>()
        .join("; ")
}

fn read_password(file: Option<&std::path::Path>) -> Result<String, String> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --password-file {}: {e}", path.display()))?;
        return Ok(text.lines().next().unwrap_or("").to_owned());
    }
    if let Ok(p) = std::env::var("NB_MANAGEMENT_USER_PASSWORD") {
        return Ok(p);
    }
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")
            .map_err(|e| format!("cannot read the password: {e}"))?;
        let again = rpassword::prompt_password("Again: ")
            .map_err(|e| format!("cannot read the password: {e}"))?;
        if first != again {
            return Err("the two passwords differ".into());
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

async fn open(config: &Config) -> Result<Store, String> {
    crate::secrets::private_data_dir(&config.data_dir)?;
    let store = Store::open(&config.database_url)
        .await
        .map_err(|e| e.to_string())?;
    crate::secrets::private_database_files(&config.data_dir);
    Ok(store)
}

pub async fn run(config: &Config, command: UserCommand) -> Result<(), String> {
    match command {
        UserCommand::Add {
            name,
            role,
            password_file,
        } => {
            let name = name.trim().to_owned();
            let mut problems = name_problems(&name);
            let parsed = Role::parse(&role);
            if parsed.is_none() {
                problems.push(FieldProblem::new(
                    "--role",
                    format!("unknown role \"{role}\": use admin, operator or viewer"),
                ));
            }
            if !problems.is_empty() {
                return Err(problems_text(&problems));
            }
            let password = read_password(password_file.as_deref())?;
            let problems = password_problems(&password, &name);
            if !problems.is_empty() {
                return Err(problems_text(&problems));
            }
            let role = parsed.expect("checked above");
            let store = open(config).await?;
            let hash = hash_password(&password);
            let user = store
                .create_user(&generate_id(), &name, role, &hash)
                .await
                .map_err(|e| e.to_string())?;
            crate::api::record(
                &store,
                CLI_ACTOR,
                "local",
                Change::new("create", "user", &name).after(&UserView::from(&user)),
            )
            .await;
            store.close().await;
            println!("created user {name} ({role}): sign in to the dashboard with this name and password");
            Ok(())
        }
        UserCommand::List => {
            let store = open(config).await?;
            let users = store.users().await.map_err(|e| e.to_string())?;
            store.close().await;
            if users.is_empty() {
                println!("no users yet: nb-management user add NAME --role admin");
            }
            for u in users {
                println!("{}\t{}\t{}", u.name, u.role, UserView::from(&u).created_at);
            }
            Ok(())
        }
    }
}
